"""The per-second features cross-modal matching needs, gathered from an AVE dataset split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avel.errors import AvelError

MATCH_SPLITS = {"train": "train_match", "val": "val_match", "test": "test_match"}  # short names -> split


@dataclass(frozen=True)
class CrossModalData:
    """Audio and pooled visual features of one split, with the event masks and catalog rows."""

    audio: np.ndarray  # (N, T, 128) float32 VGGish features
    visual: np.ndarray  # (N, T, 512) float32 globally pooled VGG-19 pool5 features
    event_mask: np.ndarray  # (N, T) float32, 1 where the second holds the event
    rows: np.ndarray  # (N,) int64 catalog rows (Annotations.txt line index)
    name: str = ""  # split name, for messages

    def __post_init__(self) -> None:
        n, t = self.event_mask.shape
        if self.audio.shape[:2] != (n, t) or self.visual.shape[:2] != (n, t) or self.rows.shape != (n,):
            raise ValueError(f"inconsistent shapes: audio {self.audio.shape}, visual {self.visual.shape}, "
                             f"event_mask {self.event_mask.shape}, rows {self.rows.shape}")

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_dataset(cls, ds: Any, split: str) -> "CrossModalData":
        """Gather split `split` ("test" or "test_match", etc.) of an AVEDataset into memory."""
        split = MATCH_SPLITS.get(split, split)
        rows = np.asarray(ds.split(split), dtype=np.int64)
        order = np.argsort(rows, kind="stable")  # h5py-backed arrays need increasing indices
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))

        def gather(arr: Any) -> np.ndarray:
            return np.asarray(arr[rows[order]], dtype=np.float32)[inverse]

        return cls(audio=gather(ds.audio), visual=gather(ds.visual_vec), event_mask=gather(ds.event_mask),
                   rows=rows, name=split)


def open_dataset(root: str | Path | Any, progress: bool = True) -> Any:
    """An AVEDataset from a directory (or the dataset itself when one is passed).

    `progress`: show the feature cache's progress bar when a first use converts the features.
    """
    if not isinstance(root, (str, Path)):
        return root
    from avel.data.dataset import AVEDataset

    return AVEDataset.open(root, progress=progress)


def check_dims(data: CrossModalData, audio_dim: int, visual_dim: int, where: Any = None) -> None:
    """Raise a clear error when the features do not fit the model's input sizes."""
    got = (data.audio.shape[-1], data.visual.shape[-1])
    if got != (audio_dim, visual_dim):
        raise AvelError(f"split '{data.name}' has audio/visual features of size {got[0]}/{got[1]}, "
                        f"the model expects {audio_dim}/{visual_dim}", where)
