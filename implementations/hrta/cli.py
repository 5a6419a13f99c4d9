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
from typing import NoReturn

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3


def quiet_frameworks() -> None:
    """Silence TensorFlow's and XLA's start-up chatter (C++ INFO/WARNING logs only; errors and
    Python exceptions still surface)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN reorders sums run to run
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def exit_without_teardown(status: int = 0) -> NoReturn:
    """End a process whose work is done and whose outputs are written and closed, skipping
    Python's interpreter teardown (``os._exit`` after flushing the standard streams and the
    logging handlers).

    For the pipeline's framework jobs only: with TensorFlow imported the teardown alone takes
    about 2 s (measured here: ``import tensorflow`` then a normal exit 8.2 s, then ``os._exit``
    6.0 s), with jax or torch about 1 s, a large share of a smoke-grid job. Nothing the suite
    writes depends on it: every output is written atomically and closed before this call.
    """
    import contextlib
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()  # a closed or missing stream has nothing to flush
    os._exit(status)


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


def _tolerance_value(text: str) -> float:
    """argparse type of --rtol/--atol/--params-rtol: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def cmd_compare(args: argparse.Namespace) -> int:
    from hrta import compare
    from hrta.run import read_run

    if len(args.runs) < 2:
        raise UsageError("compare: expected a baseline run folder and at least one more, got "
                         f"{len(args.runs)} folder")
    views = [compare.RunView.from_folder(read_run(path)) for path in args.runs]
    baseline, others = views[0], views[1:]
    default_loss, default_params = compare.tolerances.for_run(baseline.spec)
    loss_tol = default_loss.with_overrides(args.rtol, args.atol)
    params_tol = default_params.with_overrides(args.params_rtol)
    try:
        results = compare.compare_runs(baseline, others, loss_tol, params_tol)
    except compare.SpecMismatch as err:
        raise UsageError(str(err)) from None
    sys.stdout.write(compare.format_report(baseline, results,
                                           None if args.all_steps else 20))
    if args.json:
        compare.write_json(args.json, compare.report_dict(baseline, results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_CHECK_FAILED


def cmd_conformance(args: argparse.Namespace) -> int:
    from hrta import conformance
    from hrta.backends import require_backend

    backends = [require_backend(name) for name in args.backend]
    if args.measure:
        try:
            for backend in backends:
                conformance.measure(backend)
        except conformance.ConformanceError as err:
            print(f"FAILED: {err}")
            return EXIT_CHECK_FAILED
        return EXIT_OK
    status = conformance.run_pytest([b.name for b in backends], args.pytest_args)
    return {0: EXIT_OK, 1: EXIT_CHECK_FAILED}.get(status, EXIT_BAD_INPUT)


def cmd_theory(args: argparse.Namespace) -> int:
    import json

    from hrta import theory
    from hrta.atomic import write_text

    try:
        result = theory.task_theory(args.task, args.s, args.n_train, args.seed, args.train)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(theory.format_task_theory(result))
    if args.json:
        write_text(args.json, json.dumps(theory.json_safe(result), indent=2) + "\n")
    return EXIT_OK


def cmd_grid(args: argparse.Namespace) -> int:
    from hrta import grid as hgrid

    grid = hgrid.load_grid(args.grid)
    per_job = args.runs_per_job or grid["runs_per_job"]
    runs = hgrid.planned_tune(grid) + hgrid.planned_eval(grid)
    counts: dict[tuple[str, str], int] = {}
    for run in runs:
        counts[(run.phase, run.backend)] = counts.get((run.phase, run.backend), 0) + 1
    jobs = hgrid.layout(grid, per_job)
    print(f"grid {grid.name} ({grid.digest[:12]}): {len(hgrid.cases(grid))} tuned cells, "
          f"{len(runs)} runs, {sum(jobs.values())} training jobs of at most {per_job} runs")
    for (phase, backend), n in sorted(counts.items()):
        print(f"  {phase:5s} {backend:12s} {n:6d} runs in {jobs[(phase, backend)]} job(s)")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from hrta.report import ReportInputError, build_report

    try:
        folder = build_report(args.results_dir, args.out, only=args.only)
    except ReportInputError as err:
        raise UsageError(str(err)) from None
    except ValueError as err:
        if str(err).startswith("--only"):
            raise UsageError(str(err)) from None
        raise
    if args.only:
        print(f"wrote {', '.join(args.only)} to {folder}")
    else:
        print(f"{folder / 'report.html'}\n{folder / 'report.md'}")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    from hrta.batch import BatchError, run_plan_batch

    try:
        run_plan_batch(args.plan, args.phase, args.backend, args.batch, args.runs_root,
                       args.manifest, missing=args.missing)
    except BatchError as err:
        print(f"hrta: {err}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"{args.plan}: {err}") from None
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

    p = sub.add_parser("compare", help="compare runs of one spec with a baseline run; exit 1 "
                                       "when a tolerance is exceeded")
    p.add_argument("runs", nargs="+", metavar="DIR",
                   help="run folders; the first is the baseline (normally the numpy reference)")
    p.add_argument("--json", metavar="OUT", help="also write the full comparison as JSON")
    p.add_argument("--rtol", type=_tolerance_value,
                   help="train_loss relative tolerance (default: hrta.tolerances by dtype)")
    p.add_argument("--atol", type=_tolerance_value,
                   help="train_loss absolute tolerance (default 0)")
    p.add_argument("--params-rtol", type=_tolerance_value,
                   help="normwise relative tolerance of the final parameters")
    p.add_argument("--all-steps", action="store_true",
                   help="print every logged step (default: about 20 rows)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("conformance", help="run the backend conformance suite (pytest) on "
                                           "registered backends")
    p.add_argument("--backend", action="append", required=True, metavar="NAME",
                   help="backend to test (repeatable)")
    p.add_argument("--measure", action="store_true",
                   help="print the largest deviation per check and dtype instead of running "
                        "pytest")
    p.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARG",
                   help="extra pytest arguments after --, e.g. -- -k adam -x")
    p.set_defaults(func=cmd_conformance)

    p = sub.add_parser("theory", help="spectrum of the closed-form NTK (spec section 8) per s "
                                      "on a task's training inputs")
    p.add_argument("--task", required=True, help="task name (spec section 9)")
    p.add_argument("--s", type=float, nargs="+", default=[0.5, 1.0, 1.5],
                   help="homotopy parameters in [0, 2] (default: 0.5 1 1.5)")
    p.add_argument("--n-train", type=int, default=100, help="training points (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training points (default: 0)")
    p.add_argument("--train", nargs="+", default=["W", "b", "a"],
                   help="trained parameters (default: W b a; W b = frozen output layer)")
    p.add_argument("--json", metavar="OUT", help="also write the result as JSON to this file")
    p.set_defaults(func=cmd_theory)

    p = sub.add_parser("grid", help="validate an experiment grid and count its runs and jobs")
    p.add_argument("grid", help="grid file (benchmarks/*.yaml)")
    p.add_argument("--runs-per-job", type=int, help="override the grid's runs_per_job")
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("batch", help="train one batch of a pipeline plan in one process "
                                     "(what the pipeline's train jobs run)")
    p.add_argument("plan", help="plan file (results/<grid>/plan/<phase>.json)")
    p.add_argument("--phase", choices=["tune", "eval"], required=True)
    p.add_argument("--backend", required=True, help="backend of the batch")
    p.add_argument("--batch", type=int, required=True, help="batch number")
    p.add_argument("--runs-root", required=True, help="results/<grid>/runs")
    p.add_argument("--manifest", required=True, help="manifest to write when the batch is done")
    p.add_argument("--missing", choices=["fail", "skip"], default="fail",
                   help="a backend that is not installed: fail (default) or skip its runs")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("report", help="build the comparison report (HTML + Markdown) of a "
                                      "pipeline results folder")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="results/<grid> of a pipeline run")
    p.add_argument("--out", default="reports",
                   help="reports root; the report goes to <out>/<report-id>/ (default: "
                        "reports); with --only, the folder the files are written to")
    p.add_argument("--only", nargs="+", metavar="ID",
                   help="regenerate only these figures (PNG) or tables (CSV); ids are printed "
                        "under each figure and table of the report")
    p.set_defaults(func=cmd_report)
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
