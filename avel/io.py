"""Atomic file output: write to a temporary name beside the target, rename when complete.

Every file avel writes goes through here, so an interrupted command never leaves a half-written
output under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

H5_KEY = "avadataset"  # the key every released AVE feature/label file stores its array under


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp_path, path)
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
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on an output folder for the duration of the block.

    Every command that writes into a folder (a run directory, a dataset, an extraction output, a
    cache) takes this lock first, so a second writer fails at once with one clear line instead of
    both "succeeding" with one result lost. The lock is an OS file lock: it is released when the
    process exits, however it exits, so a killed run never leaves a stale lock behind.
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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise AvelError(f"another avel process (pid {holder}) is writing here; wait for it to "
                            "finish or choose another output", folder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the flock
