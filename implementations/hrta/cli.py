"""The ``hrta`` command line.

Exit status: 0 success; 1 a check failed (e.g. ``compare`` beyond tolerance); 2 bad input
(invalid spec, unusable output folder: one line naming the field, nothing written);
3 a backend that is not installed (the message says how to install it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3


def quiet_frameworks() -> None:
    """Silence TensorFlow's and XLA's start-up chatter (C++ INFO/WARNING logs only; errors and
    Python exceptions still surface)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN reorders sums run to run
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


class UsageError(Exception):
    """Bad input detected by the CLI itself (exit 2)."""


def _fail(message: str, status: int) -> int:
    print(f"hrta: error: {message}", file=sys.stderr)
    return status


def cmd_validate(args: argparse.Namespace) -> int:
    from hrta.spec import load_spec

    spec = load_spec(args.spec)
    sys.stdout.write(spec.to_yaml())
    return EXIT_OK


def _progress_bar(total: int):
    """A tqdm bar on a terminal, nothing when stderr is piped."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="step", leave=False, dynamic_ncols=True)

    def update(done: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def cmd_train(args: argparse.Namespace) -> int:
    from hrta import run
    from hrta.backends import require_backend
    from hrta.inputs import build_inputs
    from hrta.spec import load_spec

    spec = load_spec(args.spec)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: expected a folder path, got existing file {str(out)!r}")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UsageError(f"--out: expected a new or empty folder, {str(out)!r} is not empty "
                         f"(pass --force to replace it)")
    backend = require_backend(args.backend)
    inputs = build_inputs(spec)
    update, close = _progress_bar(spec.total_steps)
    try:
        outcome = run.execute(backend, inputs, update)
    finally:
        close()
    run.write_run(outcome, out, force=args.force)
    m = outcome.metrics
    status = f"diverged at step {m['diverged_step']}" if m["diverged"] else "finished"
    if not args.quiet:
        print(f"{backend.name}: {status}; train_loss={m['train_loss']} test_rel_l2="
              f"{m['test_rel_l2']} ({m['train_seconds']:.2f} s training, "
              f"{m['compile_seconds']:.2f} s compile) -> {out}")
    return EXIT_OK


def cmd_backends(args: argparse.Namespace) -> int:
    from hrta.backends import backend_names, get_backend
    from hrta.backends.registry import BrokenBackend

    for name in backend_names():
        try:
            backend = get_backend(name)
        except BrokenBackend as err:
            print(f"{name:12s} broken: {err}")
            continue
        if backend.is_available():
            versions = backend.versions()
            state = f"available ({backend.framework} {versions.get(backend.framework, '')})"
        else:
            state = f"not installed: {backend.install_hint}"
        print(f"{name:12s} {state}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from hrta import __version__

    parser = argparse.ArgumentParser(prog="hrta", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hrta-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a run spec and print it with defaults filled in")
    p.add_argument("spec", help="run spec file (YAML or JSON)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="train one run spec on one backend, write its run folder")
    p.add_argument("spec", help="run spec file (YAML or JSON)")
    p.add_argument("--backend", default="numpy", help="registered backend (default: numpy)")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("backends", help="list registered backends and whether they can run")
    p.set_defaults(func=cmd_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_frameworks()
    from hrta.backends.base import BackendUnavailable
    from hrta.backends.registry import BrokenBackend, UnknownBackend
    from hrta.inputs import InputsError
    from hrta.run import RunFolderError
    from hrta.spec import SpecError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpecError, UsageError, InputsError, RunFolderError) as err:
        return _fail(str(err), EXIT_BAD_INPUT)
    except BrokenBackend as err:
        return _fail(str(err), EXIT_UNAVAILABLE)
    except UnknownBackend as err:
        return _fail(f"--backend: {err}", EXIT_BAD_INPUT)
    except BackendUnavailable as err:
        return _fail(str(err), EXIT_UNAVAILABLE)
    except FileExistsError as err:
        return _fail(f"--out: {err} (pass --force to replace it)", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was written", 130)


if __name__ == "__main__":
    sys.exit(main())
