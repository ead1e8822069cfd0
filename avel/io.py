"""Atomic file output: write to a temporary name beside the target, rename when complete.

Every file avel writes goes through here, so an interrupted command never leaves a half-written
output under the final name.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

H5_KEY = "avadataset"  # the key every released AVE feature/label file stores its array under


# OS errors while writing that the user can fix, and how avel names them.
WRITE_PROBLEMS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted"}
TEMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.part$")  # the names atomic_path gives its temporaries


def write_problem(exc: BaseException) -> str | None:
    """The reason, when `exc` is a failed write the user can fix (full disk, quota, read-only, permissions).

    Libraries that write files (h5py, safetensors, numpy) raise their own error types; their
    messages carry the OS error text, so a library error is recognised by it as well."""
    from avel.errors import AvelError

    if isinstance(exc, AvelError):
        return None
    if isinstance(exc, OSError) and exc.errno in WRITE_PROBLEMS:
        return WRITE_PROBLEMS[exc.errno]
    if isinstance(exc, OSError) and exc.errno is not None:
        return None
    text = str(exc)
    for code, reason in WRITE_PROBLEMS.items():
        if os.strerror(code) in text or f"errno = {code}," in text or f"code: {code}," in text:
            return reason
    return None


def write_error(exc: BaseException, path: str | Path) -> Exception | None:
    """An AvelError naming `path` (the file or folder being written) for a failed write, or None when
    `exc` is not one (a bug, or a read error: let it propagate as it is)."""
    from avel.errors import AvelError

    reason = write_problem(exc)
    if reason is None:
        return None
    err = AvelError(f"cannot write: {reason}", path)
    err.write_failure = True  # type: ignore[attr-defined]  (see is_write_failure)
    return err


def is_write_failure(exc: BaseException) -> bool:
    """Whether `exc` is a failed write (raw, or already translated by atomic_path / write_error):
    callers that keep resumable temporaries delete them then, so a full disk is freed at once."""
    return bool(getattr(exc, "write_failure", False)) or write_problem(exc) is not None


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries a killed writer left in `folder` (atomic_path's `.NAME.XXXXXXXX.part`;
    resumable parts under other names are the caller's). Call only while holding
    `output_lock(folder)`: no live writer can then own them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if TEMP_PATTERN.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` only on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise (write_error(exc, path) or exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp_path, path)
    except Exception as exc:  # a full disk, quota or read-only file system: one line naming the output
        if (err := write_error(exc, path)) is not None:
            raise err from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json_if_exists(path: str | Path) -> Any | None:
    """Parse a JSON file, None when it does not exist, one clear error when it is not JSON."""
    from avel.errors import AvelError

    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AvelError(f"not valid JSON: {exc}", path) from None


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_h5(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays into a new HDF5 file, atomically (the released layout: one key per array)."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, arr in arrays.items():
                f.create_dataset(key, data=arr)


@contextmanager
def open_h5(path: str | Path, key: str = H5_KEY) -> Iterator[Any]:
    """Open `path[key]` (an h5py Dataset) for reading, with one clear error for a missing,
    truncated or keyless file."""
    import h5py

    from avel.errors import AvelError

    path = Path(path)
    if not path.is_file():
        raise AvelError("file not found", path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise AvelError(f"not a readable HDF5 file (truncated or corrupt?): {exc}", path) from None
    with f:
        if key not in f:
            raise AvelError(f"no dataset '{key}' (found: {', '.join(f.keys()) or 'none'})", path)
        yield f[key]


def read_h5(path: str | Path, key: str = H5_KEY) -> np.ndarray:
    """Read one array from an HDF5 file (errors as in `open_h5`)."""
    from avel.errors import AvelError

    with open_h5(path, key) as d:
        try:
            return d[()]
        except OSError as exc:
            raise AvelError(f"cannot read '{key}' (truncated or corrupt?): {exc}", path) from None


LOCK_FILE = ".avel.lock"  # inside a folder avel writes: held (flock) by the one process writing there


@contextmanager
def output_lock(folder: str | Path, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on an output folder for the duration of the block.

    Every command that writes into a folder (a run directory, a dataset, an extraction output, a
    cache) takes this lock first, so a second writer fails at once with one clear line instead of
    both "succeeding" with one result lost. The lock is an OS file lock: it is released when the
    process exits, however it exits, so a killed run never leaves a stale lock behind.

    wait: block until the holder finishes instead of failing (for shared caches that several
    readers may need to build: the first builds, the others then find the cache ready).
    """
    import fcntl

    from avel.errors import AvelError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as exc:
        raise AvelError(f"cannot lock for writing: {exc.strerror or exc}", folder) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise AvelError(f"another avel process (pid {holder}) is writing here; wait for it to "
                            "finish or choose another output", folder) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is only informational (a full disk must not stop the command here)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the flock
