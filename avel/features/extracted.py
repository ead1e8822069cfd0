"""The training-data interface (what avel.train reads) over an `avel extract` folder at any image size.

AVEDataset serves the release layout with 7x7 maps (224-px frames). Tests and the accuracy
benchmark extract small frames (32 px: 1x1 maps) to stay fast, and read them back with this
in-memory view instead. It needs the files `avel extract --annotations` writes: Annotations.txt,
audio/visual features, label files and split files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avel.data.catalog import read_annotations
from avel.data.classes import align_label_columns
from avel.data.splits import MATCH_FILES, ORDER_FILES, read_order
from avel.errors import AvelError
from avel.features.extract import FILES
from avel.io import read_h5


class ExtractedSet:
    """audio (N,T,128), visual (N,T,g,g,512), labels, mil_labels, event_mask, catalog, split(name)."""

    is_synthetic = False
    noisy = None  # no background-only videos
    object_cells = None  # no ground-truth object positions

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.catalog = read_annotations(self.root / FILES["annotations"])  # class index = first appearance
        self.audio = read_h5(self.root / FILES["audio"]).astype(np.float32)
        self.visual = read_h5(self.root / FILES["visual"]).astype(np.float32)
        # the label files index the categories of the full annotations the rows came from: served in this
        # catalog's order (avel.data.classes), as AVEDataset does
        self.labels = align_label_columns(read_h5(self.root / "labels.h5"), self.catalog, self.root / "labels.h5")
        self.mil_labels = align_label_columns(read_h5(self.root / "mil_labels.h5"), self.catalog,
                                              self.root / "mil_labels.h5")
        self.event_mask = read_h5(self.root / "labels_closs.h5")

    def __len__(self) -> int:
        return len(self.catalog)

    @property
    def visual_vec(self) -> np.ndarray:
        return self.visual.mean(axis=(2, 3))  # (N, T, 512) global average pool

    def split(self, name: str) -> np.ndarray:
        files = {**ORDER_FILES, **{f"{s}_match": f for s, f in MATCH_FILES.items()}}
        if name not in files:
            raise AvelError(f"unknown split '{name}'", self.root)
        return read_order(self.root / files[name], len(self.catalog))
