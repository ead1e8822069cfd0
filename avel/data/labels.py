"""Label arrays derived from the catalog, in the released layout (float32, key `avadataset`).

labels.h5 (N,10,29): per-second one-hot, event class inside [start, end), background outside.
mil_labels.h5 (N,29): video-level one-hot of the event class (weak supervision).
labels_closs.h5 (N,10): 1 where the second holds the event (cross-modality localization).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avel.data.catalog import BACKGROUND, NUM_CLASSES, NUM_SEGMENTS, Catalog
from avel.io import H5_KEY, write_h5

LABEL_FILES = {"labels": "labels.h5", "mil_labels": "mil_labels.h5", "labels_closs": "labels_closs.h5"}


def event_mask(catalog: Catalog) -> np.ndarray:
    """(N, 10) float32: 1 inside each row's [start, end)."""
    t = np.arange(NUM_SEGMENTS)
    starts = np.array([a.start for a in catalog.rows])[:, None]
    ends = np.array([a.end for a in catalog.rows])[:, None]
    return ((t >= starts) & (t < ends)).astype(np.float32)


def video_labels(catalog: Catalog) -> np.ndarray:
    """(N, 29) float32 one-hot of each row's event class."""
    out = np.zeros((len(catalog), NUM_CLASSES), np.float32)
    out[np.arange(len(catalog)), catalog.labels] = 1.0
    return out


def segment_labels(catalog: Catalog) -> np.ndarray:
    """(N, 10, 29) float32 per-second one-hot: the event class where the event is, else background."""
    mask = event_mask(catalog).astype(bool)
    classes = np.where(mask, np.array(catalog.labels)[:, None], BACKGROUND)
    return np.eye(NUM_CLASSES, dtype=np.float32)[classes]


def write_label_files(catalog: Catalog, out_dir: str | Path) -> dict[str, Path]:
    """Write labels.h5, mil_labels.h5 and labels_closs.h5 into `out_dir` (atomically)."""
    out_dir = Path(out_dir)
    arrays = {"labels": segment_labels(catalog), "mil_labels": video_labels(catalog),
              "labels_closs": event_mask(catalog)}
    paths = {}
    for name, arr in arrays.items():
        paths[name] = out_dir / LABEL_FILES[name]
        write_h5(paths[name], {H5_KEY: arr})
    return paths
