"""Split index files: the released `*_order.h5` (key `order`, row indices) and official `*Set.txt`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from avel.data.catalog import Catalog, read_lines
from avel.errors import AvelError
from avel.io import read_h5, write_h5

SPLITS = ("train", "val", "test")
ORDER_KEY = "order"
ORDER_FILES = {s: f"{s}_order.h5" for s in SPLITS}  # event localization splits
MATCH_FILES = {s: f"{s}_order_match.h5" for s in SPLITS}  # cross-modality splits (test: short events)
SET_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}  # official zip


def read_order(path: str | Path, num_rows: int | None = None) -> np.ndarray:
    """Read a `*_order.h5` file: int64 row indices, checked against the catalog size."""
    order = read_h5(path, ORDER_KEY)
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        raise AvelError(f"'{ORDER_KEY}' must be a 1-D integer array, got {order.shape} {order.dtype}", path)
    if num_rows is not None and len(order) and (order.min() < 0 or order.max() >= num_rows):
        raise AvelError(f"row index out of range 0..{num_rows - 1} (min {order.min()}, max {order.max()})", path)
    if len(np.unique(order)) != len(order):
        raise AvelError("duplicate row indices", path)
    return order.astype(np.int64)


def write_order(path: str | Path, rows: np.ndarray) -> None:
    write_h5(path, {ORDER_KEY: np.asarray(rows, dtype=np.int64)})


def read_split_txt(path: str | Path, catalog: Catalog) -> np.ndarray:
    """Map an official trainSet/valSet/testSet.txt (Annotations.txt format) to catalog row indices.

    A line matches the catalog row with the same category, video ID and span; when one video has
    several identical rows, successive lines take successive rows.
    """
    path = Path(path)
    index: dict[tuple, list[int]] = defaultdict(list)
    for a in catalog.rows:
        index[(a.category, a.video_id, a.start, a.end)].append(a.row)
    rows = []
    for n, (category, video_id, _q, start, end) in enumerate(read_lines(path), start=1):
        if category not in catalog.categories:
            raise AvelError(f"entry {n}: unknown category '{category}'", path)
        candidates = index.get((category, video_id, start, end))
        if not candidates:
            raise AvelError(f"entry {n}: {category}&{video_id}&{start}&{end} is not in the annotations", path)
        rows.append(candidates.pop(0))
    return np.array(rows, dtype=np.int64)
