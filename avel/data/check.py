"""`avel data check`: validate a dataset directory and summarise it.

Validation stops at the first problem and raises AvelError naming the file (and row): missing
directory or file, unparsable Annotations.txt, wrong HDF5 key/shape/dtype, a row count that does
not match Annotations.txt, label rows that disagree with Annotations.txt, out-of-range or
overlapping split indices, NaN/Inf values, and truncated or corrupt HDF5 files. Feature files are
read in row chunks (the visual file of the release is 8.3 GB), so memory stays bounded.

The summary (`CheckReport`) holds counts per split and category, the event-length histogram and
per-file feature statistics; `print_report` renders it with rich tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avel.data.catalog import BACKGROUND, NUM_CLASSES, NUM_SEGMENTS, Catalog, read_annotations
from avel.data.dataset import (ANNOTATIONS, AUDIO_FILE, AUDIO_ROW, NOISY_FILES, VISUAL_FILE, VISUAL_ROW,
                               VISUAL_VEC_FILE, VISUAL_VEC_ROW)
from avel.data.classes import align_label_columns
from avel.data.labels import LABEL_FILES, event_mask, segment_labels, video_labels
from avel.data.splits import MATCH_FILES, ORDER_FILES, SPLITS, read_order
from avel.data.store import FLOAT16_MAX, SourceInfo, first_nonfinite_row, inspect_h5
from avel.data.synth import AUDIO_MAP_FILE, OBJECT_CELLS_FILE, length_histogram, read_marker
from avel.errors import AvelError
from avel.io import read_h5
from avel.progress import stderr_progress

CHUNK_BYTES = 128 * 2**20  # bytes of a feature file read per step while scanning for NaN/Inf
CELLS = 49  # 7x7 grid cells addressed by object_cells.h5
FLOAT16_FILES = (VISUAL_FILE, NOISY_FILES["visual"], AUDIO_MAP_FILE)  # cached as float16 (AVEDataset)


@dataclass
class FeatureStats:
    """Value statistics of one feature file, accumulated over row chunks."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    min: float = float("inf")
    max: float = float("-inf")
    total: float = 0.0
    count: int = 0
    zeros: int = 0

    def add(self, x: np.ndarray) -> None:
        if x.size:
            self.min = min(self.min, float(x.min()))
            self.max = max(self.max, float(x.max()))
            self.total += float(x.sum(dtype=np.float64))
            self.count += x.size
            self.zeros += int(np.count_nonzero(x == 0))

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)

    @property
    def zero_fraction(self) -> float:
        return self.zeros / max(self.count, 1)


@dataclass
class CheckReport:
    """What `check_dataset` found in a valid directory."""

    root: Path
    catalog: Catalog
    splits: dict[str, np.ndarray]  # split name -> row indices (match splits named "<s>_match")
    features: list[FeatureStats] = field(default_factory=list)
    noisy_videos: int = 0
    synth: dict | None = None  # AVE-Synth marker metadata
    notes: list[str] = field(default_factory=list)  # present optional files, derived files


def iter_chunks(info: SourceInfo, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (first row, end row, rows) of an HDF5 dataset in bounded chunks; unreadable rows raise AvelError."""
    import h5py

    row_bytes = max(1, int(np.prod(info.shape[1:])) * info.dtype.itemsize)
    step = max(1, chunk_bytes // row_bytes)
    try:
        f = h5py.File(info.path, "r")
    except OSError as exc:
        raise AvelError(f"not a readable HDF5 file (truncated or corrupt?): {exc}", info.path) from None
    with f:
        dset = f[info.key]
        for i0 in range(0, info.shape[0], step):
            i1 = min(i0 + step, info.shape[0])
            try:
                rows = dset[i0:i1]
            except (OSError, ValueError) as exc:
                raise AvelError(f"rows {i0}..{i1 - 1} unreadable (truncated or corrupt?): {exc}", info.path) from None
            yield i0, i1, rows


def _expect(path: Path, n: int | None, row: tuple[int, ...], what: str, floating: bool = True) -> SourceInfo:
    """Header check of path['avadataset']: shape (n, *row) and a float (or integer) dtype."""
    info = inspect_h5(path)
    want = ((n,) if n is not None else (info.shape[0],)) + tuple(row)
    if info.shape != want:
        if n is not None and info.shape[1:] == tuple(row):
            raise AvelError(f"{info.shape[0]} rows but Annotations.txt has {n}", path)
        pretty = "(" + ",".join(str(x) for x in want) + ")"
        raise AvelError(f"{what}: expected shape {pretty}, got {info.shape}", path)
    kind = np.floating if floating else np.integer
    if not np.issubdtype(info.dtype, kind):
        raise AvelError(f"{what}: expected {'floating-point' if floating else 'integer'} values, got {info.dtype}",
                        path)
    return info


def scan_values(info: SourceInfo, label: str, progress=None) -> FeatureStats:
    """Stream a feature file: fail on NaN/Inf and, for files the training cache stores as float16,
    on values beyond its range (naming the row); collect statistics."""
    stats = FeatureStats(info.path.name, info.shape, str(info.dtype))
    task = progress.add_task(f"scanning {info.path.name}", total=info.shape[0]) if progress else None
    half = info.path.name in FLOAT16_FILES
    for i0, i1, rows in iter_chunks(info):
        bad = first_nonfinite_row(rows)
        if bad is not None:
            raise AvelError(f"row {i0 + bad}: NaN or infinite values in {label}", info.path)
        if half and rows.size and np.abs(rows).max() > FLOAT16_MAX:
            r = int(np.flatnonzero(np.abs(rows.reshape(len(rows), -1)).max(axis=1) > FLOAT16_MAX)[0])
            raise AvelError(f"row {i0 + r}: {label} exceed {FLOAT16_MAX:g}, the float16 range of the feature "
                            "cache (avel train would refuse this file)", info.path)
        stats.add(rows)
        if progress:
            progress.update(task, completed=i1)
    return stats


def _check_labels(root: Path, catalog: Catalog, notes: list[str]) -> None:
    """Label files, when present, must equal the arrays Annotations.txt defines (row by row)."""
    derived = {"labels": segment_labels(catalog), "mil_labels": video_labels(catalog),
               "labels_closs": event_mask(catalog)}
    rows = {"labels": (NUM_SEGMENTS, NUM_CLASSES), "mil_labels": (NUM_CLASSES,), "labels_closs": (NUM_SEGMENTS,)}
    for key, name in LABEL_FILES.items():
        path = root / name
        if not path.is_file():
            notes.append(f"{name} absent: derived from Annotations.txt")
            continue
        _expect(path, len(catalog), rows[key], "label array")
        arr = read_h5(path)
        bad = first_nonfinite_row(arr)
        if bad is not None:
            raise AvelError(f"row {bad}: NaN or infinite values", path)
        if key != "labels_closs":  # class columns in the catalog's order, as AVEDataset serves them
            aligned = align_label_columns(arr, catalog, path)
            if aligned is not arr:
                notes.append(f"{name} orders its class columns otherwise than Annotations.txt's first appearance: "
                             "served matched by category")
            arr = aligned
        diff = (arr != derived[key]).reshape(len(arr), -1).any(axis=1)
        if diff.any():
            r = int(np.flatnonzero(diff)[0])
            a = catalog.rows[r]
            raise AvelError(f"row {r}: does not match Annotations.txt ({a.category}, seconds {a.start}..{a.end})", path)


def _check_splits(root: Path, n: int, catalog: Catalog, notes: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for s in SPLITS:
        path = root / ORDER_FILES[s]
        if not path.is_file():
            raise AvelError("split file not found", path)
        out[s] = read_order(path, n)
    empty = [s for s in SPLITS if len(out[s]) == 0]
    if empty:
        raise AvelError(f"the {empty[0]} split is empty (avel train needs rows in {', '.join(SPLITS)})",
                        root / ORDER_FILES[empty[0]])
    seen: dict[int, str] = {}
    for s in SPLITS:
        for r in out[s]:
            if int(r) in seen:
                raise AvelError(f"row {int(r)} is also in the {seen[int(r)]} split", root / ORDER_FILES[s])
            seen[int(r)] = s
    if len(seen) < n:
        notes.append(f"{n - len(seen)} rows are in none of train/val/test")
    match_present = [s for s in SPLITS if (root / MATCH_FILES[s]).is_file()]
    for s in match_present:
        out[f"{s}_match"] = read_order(root / MATCH_FILES[s], n)
    if match_present and len(match_present) < len(SPLITS):
        missing = next(s for s in SPLITS if s not in match_present)
        raise AvelError("missing (the cross-modality split needs all three *_order_match.h5)",
                        root / MATCH_FILES[missing])
    if "test_match" in out:
        full = [int(r) for r in out["test_match"] if catalog.rows[r].length >= NUM_SEGMENTS]
        if full:
            notes.append(f"test_order_match.h5 holds {len(full)} full-length events (the release has none)")
    return out


def check_dataset(root: str | Path, progress: bool = True) -> CheckReport:
    """Validate every file of a dataset directory; raise AvelError at the first problem."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    root = Path(root)
    if not root.exists():
        raise AvelError("dataset directory not found", root)
    if not root.is_dir():
        raise AvelError("not a directory", root)
    catalog = read_annotations(root / ANNOTATIONS)
    n = len(catalog)
    report = CheckReport(root, catalog, {}, synth=read_marker(root))
    feats = [(_expect(root / AUDIO_FILE, n, AUDIO_ROW, "audio features"), "audio features"),
             (_expect(root / VISUAL_FILE, n, VISUAL_ROW, "visual features"), "visual features")]
    if (root / VISUAL_VEC_FILE).is_file():
        feats.append((_expect(root / VISUAL_VEC_FILE, n, VISUAL_VEC_ROW, "pooled visual features"), "pooled visual"))
    else:
        report.notes.append(f"{VISUAL_VEC_FILE} absent: derived as the 7x7 mean of {VISUAL_FILE}")
    if (root / AUDIO_MAP_FILE).is_file():  # (N, 10, H, W, C) with any map size
        tail = inspect_h5(root / AUDIO_MAP_FILE).shape[2:]
        feats.append((_expect(root / AUDIO_MAP_FILE, n, (NUM_SEGMENTS, *tail) if len(tail) == 3
                              else (NUM_SEGMENTS, 6, 4, 512), "audio maps"), "audio maps"))
    else:
        report.notes.append(f"no {AUDIO_MAP_FILE}: models that need spatial audio maps "
                            f"({', '.join(_audio_map_models())}) cannot be trained on this dataset")
    _check_labels(root, catalog, report.notes)
    report.splits = _check_splits(root, n, catalog, report.notes)
    feats += _check_noisy(root, report)
    _check_object_cells(root, catalog, report.notes)
    with stderr_progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                         disable=not progress, transient=True) as bar:
        report.features = [scan_values(info, label, bar) for info, label in feats]
    return report


def _audio_map_models() -> list[str]:
    """Registered models that read spatial audio maps."""
    from avel.models.registry import list_models, model_spec

    return [m for m in list_models() if "audio_map" in model_spec(m).inputs]


def _check_noisy(root: Path, report: CheckReport) -> list[tuple[SourceInfo, str]]:
    paths = {k: root / v for k, v in NOISY_FILES.items()}
    present = {k for k, p in paths.items() if p.is_file()}
    if not present:
        report.notes.append("no background-only (*_noisy.h5) videos")
        return []
    if len(present) < len(paths):
        missing = next(p for k, p in paths.items() if k not in present)
        raise AvelError("missing (the background-only set needs all three *_noisy.h5 files)", missing)
    labels_info = _expect(paths["labels"], None, (NUM_CLASSES,), "noisy labels")
    m = labels_info.shape[0]
    labels = read_h5(paths["labels"])
    wrong = ~((labels[:, BACKGROUND] == 1) & (labels.sum(axis=1) == 1))
    if wrong.any():
        raise AvelError(f"row {int(np.flatnonzero(wrong)[0])}: background-only videos must be labelled "
                        f"background (index {BACKGROUND}) only", paths["labels"])
    report.noisy_videos = m
    return [(_expect(paths["audio"], m, AUDIO_ROW, "noisy audio features"), "noisy audio"),
            (_expect(paths["visual"], m, VISUAL_ROW, "noisy visual features"), "noisy visual")]


def _check_object_cells(root: Path, catalog: Catalog, notes: list[str]) -> None:
    """AVE-Synth side file: a cell 0..48 in event seconds, -1 elsewhere."""
    path = root / OBJECT_CELLS_FILE
    if not path.is_file():
        return
    _expect(path, len(catalog), (NUM_SEGMENTS,), "object cells", floating=False)
    cells = read_h5(path)
    mask = event_mask(catalog).astype(bool)
    bad = ((cells < -1) | (cells >= CELLS) | ((cells >= 0) != mask)).any(axis=1)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise AvelError(f"row {r}: cells must be 0..{CELLS - 1} in the event seconds of Annotations.txt "
                        f"and -1 elsewhere, got {cells[r].tolist()}", path)
    notes.append(f"{OBJECT_CELLS_FILE}: ground-truth object cells for {int(mask.sum())} event seconds")


def print_report(report: CheckReport, console=None) -> None:
    """Render the summary as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    cat = report.catalog
    kind = "AVE-Synth (synthetic stand-in)" if report.synth else "AVE"
    head = f"[bold]{report.root}[/bold]: {kind}, {len(cat)} rows, {len(cat.video_ids)} videos, " \
           f"{len(cat.categories)} categories + background"
    if report.synth:
        head += f", seed {report.synth.get('seed')}, generator v{report.synth.get('version')}"
    console.print(head)

    labels = np.array(cat.labels)
    names = list(report.splits)
    t = Table(title="Rows per split and category")
    t.add_column("category")
    for s in names:
        t.add_column(s, justify="right")
    t.add_column("all", justify="right")
    for c, name in enumerate(cat.categories):
        t.add_row(name, *(str(int((labels[report.splits[s]] == c).sum())) for s in names),
                  str(int((labels == c).sum())))
    t.add_row("[bold]total[/bold]", *(str(len(report.splits[s])) for s in names), str(len(cat)))
    console.print(t)

    hist = length_histogram(cat)
    h = Table(title="Event length (seconds)")
    h.add_column("length", justify="right")
    h.add_column("rows", justify="right")
    h.add_column("", justify="left")
    top = max(hist.values())
    for length, count in hist.items():
        h.add_row(str(length), str(count), "#" * max(1, round(30 * count / top)))
    console.print(h)

    f = Table(title="Feature statistics")
    for col in ("file", "shape", "dtype", "min", "max", "mean", "zeros"):
        f.add_column(col, justify="left" if col in ("file", "shape", "dtype") else "right")
    for s in report.features:
        f.add_row(s.name, "x".join(map(str, s.shape)), s.dtype, f"{s.min:.3g}", f"{s.max:.3g}", f"{s.mean:.3g}",
                  f"{100 * s.zero_fraction:.1f}%")
    console.print(f)
    if report.noisy_videos:
        console.print(f"background-only videos: {report.noisy_videos}")
    for note in report.notes:
        console.print(f"note: {note}")
    console.print("[green]OK[/green]: no problems found")
