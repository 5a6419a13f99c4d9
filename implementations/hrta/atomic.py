"""Atomic file and folder writes: a result is either complete or absent, never half-written.

Files are written to a temporary sibling, flushed and fsynced, then renamed over the target
(rename is atomic on POSIX within one file system). Folders are assembled under a temporary
sibling name and renamed into place. An existing folder being replaced is swapped with the new
one in a single step where the system can (Linux renameat2 RENAME_EXCHANGE), so that its path
always holds one complete folder, old or new, even if the process is killed mid-way; elsewhere
it is first moved aside and removed once the new one is in place.

Files and folders get the usual permissions of new files (0666 / 0777 less the umask), not the
owner-only ones of the temporary files they start as.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 with RENAME_EXCHANGE); False where
    the system or file system cannot, so that the caller falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path | str, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_folder(target: Path | str, *, replace: bool = False, durable: bool = True):
    """Yield a temporary folder beside ``target``; on normal exit it becomes ``target``.

    If ``target`` exists and is not empty, ``replace`` must be True; the old folder is kept
    until the new one is in place. On an exception the staged folder is removed and the old
    target is untouched.

    ``durable=False`` skips the fsyncs (about 20 ms each on a virtual disk, six per folder):
    the rename is still atomic for every other process, and survives a killed process, but
    not a power cut. A caller that writes many folders (``hrta.batch``) syncs once at the end
    instead (``os.sync``) and validates unsynced folders before reusing them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and any(target.iterdir()) and not replace:
        raise FileExistsError(f"{target} exists and is not empty")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial",
                                    dir=target.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        if durable:
            for child in staging.iterdir():
                if child.is_file():
                    with open(child, "rb") as handle:
                        os.fsync(handle.fileno())
            _fsync_dir(staging)
        if target.exists() and _exchange(staging, target):
            if durable:
                _fsync_dir(target.parent)
            shutil.rmtree(staging)  # now the old folder
            return
        backup = None
        if target.exists():
            backup = target.parent / f".{target.name}.old-{os.getpid()}"
            os.rename(target, backup)
        os.rename(staging, target)
        if durable:
            _fsync_dir(target.parent)
        if backup is not None:
            shutil.rmtree(backup)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json(data, path: Path | str) -> None:
    """Write JSON atomically; NumPy scalars become plain numbers, non-finite floats null.
    Lives here rather than in :mod:`hrta.aggregate` so that writing a plan does not import
    pandas (0.45 s of a pipeline job that takes 1 s)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(plain(data), indent=1, sort_keys=True, allow_nan=False)
    write_text(path, text + "\n")


def plain(value):
    """``value`` with NumPy scalars as Python numbers and NaN/inf as None, recursively."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
