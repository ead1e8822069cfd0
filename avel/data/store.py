"""Feature store: the released float64 HDF5 arrays, converted once to memory-mapped .npy files.

The AVE visual file is 8.3 GB of float64; training must not load it. `FeatureStore.array` converts
a source array once, in row chunks, into `CACHE/<name>.npy` (float16 for the visual maps, float32
otherwise) and then serves it as a read-only `np.memmap`, so rows are read at random from disk and
only touched pages occupy memory.

Trust and rebuild. Beside each cache file, `<name>.json` records the source's fingerprint (file
size, modification time, a hash of sampled blocks, HDF5 key, shape and dtype, and the conversion),
plus a blake2b checksum of the source values computed during conversion. A cache is used only when
that metadata exists and the fingerprint equals the current source's; otherwise it is rebuilt.

Atomic and resumable. Conversion writes `<name>.npy.part` and records progress (rows done, the
fingerprint) in `<name>.progress.json` after each chunk; an interrupted conversion resumes from
there. The finished part is renamed onto `<name>.npy` and the metadata is written last, so a crash
at any point leaves nothing that is later trusted. The cache folder's `avel.io.output_lock` (in
waiting mode) serialises conversions by several processes; its holder first deletes temporaries
no progress record can resume. A build that fails (full disk, NaN values) removes its part file,
and a full disk is reported against the cache file, never the source.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avel.cache import cache_root
from avel.errors import AvelError
from avel.io import H5_KEY, open_h5, output_lock, remove_temporaries, write_json, write_problem
from avel.progress import stderr_progress

CACHE_DIRNAME = ".avel_cache"  # default cache folder inside a dataset directory
CACHE_ENV = "AVEL_CACHE_DIR"  # overrides the cache location (one subfolder per dataset)
CHUNK_BYTES = 256 * 2**20  # source bytes read per conversion step (bounds memory during conversion)
SAMPLE_BLOCK = 2**20  # bytes hashed at each of the sampled offsets of a source file
SAMPLE_POINTS = 8  # sampled offsets (start, end and evenly between)
FLOAT16_MAX = 65504.0  # largest finite float16: values beyond it cannot be cached as float16
STORE_VERSION = 1  # bump when the cache format changes (old caches are then rebuilt)


def sample_hash(path: Path) -> str:
    """Hash of SAMPLE_POINTS blocks spread over the file: cheap, catches in-place edits anywhere sampled."""
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for k in range(SAMPLE_POINTS):
            f.seek(max(0, (size - SAMPLE_BLOCK) * k // max(SAMPLE_POINTS - 1, 1)))
            h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest()


@dataclass(frozen=True)
class SourceInfo:
    """Shape and dtype of one HDF5 dataset, read from its header without loading it."""

    path: Path
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


def inspect_h5(path: str | Path, key: str = H5_KEY) -> SourceInfo:
    """Shape/dtype of `path[key]`, or an AvelError naming the file (missing, unreadable, no key)."""
    with open_h5(path, key) as d:
        return SourceInfo(Path(path), key, tuple(d.shape), np.dtype(d.dtype))


def default_cache_dir(root: str | Path) -> Path:
    """`ROOT/.avel_cache`, or `$AVEL_CACHE_DIR/<name>-<hash>` when set or when ROOT is read-only (then in
    avel's cache folder, avel.cache.cache_root(), when the variable is not set)."""
    root = Path(root).resolve()
    env = os.environ.get(CACHE_ENV)
    if env is None and os.access(root, os.W_OK):
        return root / CACHE_DIRNAME
    base = Path(env) if env else cache_root()
    return base / f"{root.name}-{hashlib.blake2b(str(root).encode(), digest_size=6).hexdigest()}"


Transform = Callable[[np.ndarray], np.ndarray]  # chunk of source rows -> chunk of cached rows


class FeatureStore:
    """Memory-mapped caches of HDF5 arrays in one folder (see the module docstring)."""

    def __init__(self, cache_dir: str | Path, progress: bool = True) -> None:
        self.cache_dir = Path(cache_dir)
        self.progress = progress

    def array(self, source: str | Path, dtype: np.dtype | type = np.float32, key: str = H5_KEY,
              name: str | None = None, transform: tuple[str, Transform, tuple[int, ...]] | None = None
              ) -> np.memmap:
        """Read-only memmap of `source[key]` cast to `dtype`, converting (or reusing) the cache.

        transform: optional (id, fn, row_shape): the cache holds fn(rows) instead of the rows, e.g.
        the 7x7 mean of the visual maps; `id` names it in the fingerprint.
        """
        info = inspect_h5(source, key)
        dtype = np.dtype(dtype)
        row_shape = info.shape[1:] if transform is None else tuple(transform[2])
        name = name or Path(source).stem + ("" if transform is None else f".{transform[0]}")
        fp = self.fingerprint(info, dtype, None if transform is None else transform[0])
        npy, meta = self.cache_dir / f"{name}.npy", self.cache_dir / f"{name}.json"
        if not self._trusted(npy, meta, fp):
            # another process may be converting: wait for it (it holds the folder's lock), then recheck
            with output_lock(self.cache_dir, wait=True):
                self._remove_stale_parts()
                if not self._trusted(npy, meta, fp):
                    self._convert(info, npy, meta, fp, dtype, row_shape, None if transform is None else transform[1])
        return np.load(npy, mmap_mode="r")

    def _remove_stale_parts(self) -> None:
        """With the folder locked: delete atomic-write temporaries and `.npy.part` files that no
        progress record can resume (left by a killed or failed conversion)."""
        remove_temporaries(self.cache_dir)
        for part in self.cache_dir.glob("*.npy.part"):
            if not part.with_name(part.name[:-len(".npy.part")] + ".progress.json").is_file():
                part.unlink(missing_ok=True)

    @staticmethod
    def fingerprint(info: SourceInfo, dtype: np.dtype, transform_id: str | None = None) -> dict:
        """What the cache depends on; any difference triggers a rebuild."""
        st = info.path.stat()
        return {"store_version": STORE_VERSION, "source": info.path.name, "key": info.key,
                "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample_blake2b": sample_hash(info.path),
                "source_shape": list(info.shape), "source_dtype": info.dtype.str, "cache_dtype": dtype.str,
                "transform": transform_id}

    @staticmethod
    def _trusted(npy: Path, meta: Path, fp: dict) -> bool:
        if not (npy.is_file() and meta.is_file()):
            return False
        try:
            saved = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if saved.get("fingerprint") != fp or npy.stat().st_size != saved.get("cache_bytes"):
            return False
        return True

    def _convert(self, info: SourceInfo, npy: Path, meta: Path, fp: dict, dtype: np.dtype,
                 row_shape: tuple[int, ...], fn: Transform | None) -> None:
        """Chunked, resumable conversion to `npy.part`; rename and write metadata at the end."""
        import h5py

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        meta.unlink(missing_ok=True)  # from here until the end the old cache is not trusted
        part = npy.with_name(npy.name + ".part")
        progress_file = npy.with_name(npy.stem + ".progress.json")
        n = info.shape[0]
        shape = (n, *row_shape)
        done = _resume_rows(progress_file, fp, n)
        row_bytes = max(1, int(np.prod(info.shape[1:])) * info.dtype.itemsize)
        step = max(1, CHUNK_BYTES // row_bytes)
        hasher = hashlib.blake2b(digest_size=16)
        out_row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        try:
            header_len = _write_header(part, shape, dtype)
            with h5py.File(info.path, "r") as f, open(part, "r+b") as out, _progress(self.progress) as bar:
                dset = f[info.key]
                task = bar.add_task(f"caching {info.path.name}", total=n, completed=done)
                for i0 in range(0, done, step):  # resumed: rehash rows already converted (cheap)
                    hasher.update(_read_rows(dset, i0, min(i0 + step, done), info.path).data)
                out.seek(header_len + done * out_row_bytes)
                for i0 in range(done, n, step):
                    i1 = min(i0 + step, n)
                    src = _read_rows(dset, i0, i1, info.path)
                    hasher.update(src.data)
                    bad = first_nonfinite_row(src)
                    if bad is not None:
                        raise AvelError(f"row {i0 + bad}: NaN or infinite values (the cache is not built)", info.path)
                    rows = src if fn is None else fn(src)
                    if dtype == np.float16 and np.abs(rows).max(initial=0) > FLOAT16_MAX:
                        raise AvelError(f"rows {i0}..{i1 - 1}: values exceed the float16 range", info.path)
                    out.write(np.ascontiguousarray(rows, dtype=dtype).data)
                    out.flush()
                    write_json(progress_file, {"fingerprint": fp, "rows_done": i1})
                    bar.update(task, completed=i1)
            os.replace(part, npy)
            progress_file.unlink(missing_ok=True)
            write_json(meta, {"fingerprint": fp, "shape": list(shape), "dtype": dtype.str,
                              "cache_bytes": npy.stat().st_size, "source_values_blake2b": hasher.hexdigest()})
        except Exception as exc:  # a failed build (full disk, bad values) leaves nothing behind
            for leftover in (part, progress_file):
                leftover.unlink(missing_ok=True)
            if write_problem(exc) is not None:
                raise AvelError(f"cannot write the feature cache: {write_problem(exc)} (free space, or set "
                                f"{CACHE_ENV} to a folder with room)", npy) from None
            if isinstance(exc, OSError) and not isinstance(exc, AvelError):
                raise AvelError(f"cannot read rows for the cache (truncated or corrupt?): {exc}", info.path) from None
            raise


def _read_rows(dset, i0: int, i1: int, source: Path) -> np.ndarray:  # noqa: ANN001 (h5py Dataset)
    """Rows i0..i1 of the source; a read failure blames the source file (never a write failure)."""
    try:
        return np.ascontiguousarray(dset[i0:i1])
    except OSError as exc:
        raise AvelError(f"cannot read rows {i0}..{i1 - 1} for the cache (truncated or corrupt?): {exc}", source) \
            from None


def _write_header(part: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Create `part` as a full-size (sparse) .npy file unless a matching one exists; return the header size."""
    import io

    from numpy.lib import format as npformat

    header = {"descr": npformat.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, header)
    head = buf.getvalue()
    total = len(head) + int(np.prod(shape)) * dtype.itemsize
    if part.is_file() and part.stat().st_size == total:
        with open(part, "rb") as f:
            if f.read(len(head)) == head:
                return len(head)
    with open(part, "wb") as f:
        f.write(head)
        f.truncate(total)
    return len(head)


def _resume_rows(progress_file: Path, fp: dict, n: int) -> int:
    """Rows an interrupted conversion of the same source already wrote (0 to start afresh)."""
    try:
        saved = json.loads(progress_file.read_text())
        done = int(saved["rows_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return done if saved.get("fingerprint") == fp and 0 <= done <= n else 0


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    return stderr_progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           disable=not enabled)


def first_nonfinite_row(rows: np.ndarray) -> int | None:
    """Index of the first row (along axis 0) holding a NaN or an infinity, or None."""
    bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def grid_mean(rows: np.ndarray) -> np.ndarray:
    """(n, 10, 7, 7, 512) -> (n, 10, 512): global average pooling over the 7x7 grid."""
    return rows.mean(axis=(2, 3))


def served_checksum(array: object) -> str | None:
    """The blake2b checksum of the source values recorded when the cache behind `array` (a memmap
    served by `FeatureStore.array`) was built; None for any other array. Cheap: reads the metadata."""
    filename = getattr(array, "filename", None)
    if not filename:
        return None
    meta = Path(filename).with_suffix(".json")
    try:
        return json.loads(meta.read_text()).get("source_values_blake2b")
    except (OSError, json.JSONDecodeError):
        return None
