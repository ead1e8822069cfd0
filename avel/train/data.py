"""Batches of dataset rows as float32 tensors, held in memory when small enough.

The dataset's arrays (h5 / memory-mapped, often float64) are indexed by row. A `Source` covers
some rows of some named arrays; `take(positions)` returns those rows as tensors. A split whose
features fit in `cache_bytes` is converted to float32 once; a larger one is read per batch (rows
sorted, as h5py requires, then put back in the asked order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

READ_CHUNK = 256  # rows converted per read when caching a split


def _nbytes32(arr: Any, n: int) -> int:
    return int(np.prod(arr.shape[1:], dtype=np.int64)) * n * 4


def read_rows(arr: Any, rows: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """arr[rows] for any row order (read in increasing row order, as h5py needs); `dtype` None keeps it."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    data = np.asarray(arr[rows[order]], dtype=dtype)
    out = np.empty_like(data)
    out[order] = data
    return out


class Source:
    """Rows `rows` of the named arrays."""

    def __init__(self, arrays: Mapping[str, Any], rows: np.ndarray, cache_bytes: float = 0.0) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.arrays = dict(arrays)
        total = sum(_nbytes32(a, len(self.rows)) for a in self.arrays.values())
        self.cached: dict[str, torch.Tensor] | None = None
        if total <= cache_bytes:
            self.cached = {}
            for key, arr in self.arrays.items():
                buf = np.empty((len(self.rows), *arr.shape[1:]), np.float32)
                for i in range(0, len(self.rows), READ_CHUNK):
                    buf[i:i + READ_CHUNK] = read_rows(arr, self.rows[i:i + READ_CHUNK])
                self.cached[key] = torch.from_numpy(buf)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Tensors for the rows at `positions` (indices into this source's rows)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.cached is not None:
            idx = torch.from_numpy(positions)
            return {k: v.index_select(0, idx) for k, v in self.cached.items()}
        return {k: torch.from_numpy(read_rows(a, self.rows[positions])) for k, a in self.arrays.items()}


class ConcatSource:
    """Several sources seen as one (the weak training set: AVE videos + background-only videos)."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = [s for s in sources if len(s)]
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        positions = np.asarray(positions, dtype=np.int64)
        which = np.searchsorted(self.offsets, positions, side="right") - 1
        parts, order = [], []
        for s, src in enumerate(self.sources):
            sel = np.nonzero(which == s)[0]
            if len(sel):
                parts.append(src.take(positions[sel] - self.offsets[s]))
                order.append(sel)
        perm = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))
        return {k: torch.cat([p[k] for p in parts]).index_select(0, perm) for k in parts[0]}
