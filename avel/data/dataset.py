"""AVEDataset: a dataset directory laid out like the authors' release, served from the feature store.

Layout (every array under the key `avadataset`, orders under `order`):

    Annotations.txt                      one event per row; the row index keys every array
    audio_feature.h5    (N,10,128)       float64 VGGish features
    visual_feature.h5   (N,10,7,7,512)   float64 VGG-19 pool5 maps
    labels.h5 (N,10,29), mil_labels.h5 (N,29), labels_closs.h5 (N,10)   float32; derived when missing
                                         (class columns served in the catalog's category order)
    {train,val,test}_order.h5, {train,val,test}_order_match.h5          row indices
    optional: visual_feature_vec.h5 (N,10,512; derived when missing), audio_feature_noisy.h5,
    visual_feature_noisy.h5, labels_noisy.h5 (background-only videos), and for AVE-Synth
    avel_synth.json, object_cells.h5 (N,10), audio_feature_map.h5 (N,10,6,4,512).

Features are converted once into memory-mapped caches (avel.data.store) and served as read-only
`np.memmap`s indexable by any integer row array: `ds.visual[rows]` reads only those rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from avel.data.classes import align_label_columns
from avel.data.catalog import NUM_CLASSES, NUM_SEGMENTS, Catalog, read_annotations
from avel.data.labels import LABEL_FILES, event_mask, segment_labels, video_labels
from avel.data.splits import MATCH_FILES, ORDER_FILES, SPLITS, read_order
from avel.data.store import FeatureStore, default_cache_dir, grid_mean, inspect_h5
from avel.data.synth import AUDIO_MAP_FILE, OBJECT_CELLS_FILE, read_marker
from avel.errors import AvelError
from avel.io import read_h5

ANNOTATIONS = "Annotations.txt"
AUDIO_FILE = "audio_feature.h5"
VISUAL_FILE = "visual_feature.h5"
VISUAL_VEC_FILE = "visual_feature_vec.h5"
NOISY_FILES = {"audio": "audio_feature_noisy.h5", "visual": "visual_feature_noisy.h5", "labels": "labels_noisy.h5"}
AUDIO_ROW = (NUM_SEGMENTS, 128)  # one row of audio_feature.h5
VISUAL_ROW = (NUM_SEGMENTS, 7, 7, 512)  # one row of visual_feature.h5
VISUAL_VEC_ROW = (NUM_SEGMENTS, 512)  # one row of visual_feature_vec.h5
VISUAL_CACHE_DTYPE = np.float16  # visual maps are cached (and served) as float16: half the disk and page cache
SPLIT_NAMES = (*SPLITS, *(f"{s}_match" for s in SPLITS))  # names accepted by AVEDataset.split


@dataclass(frozen=True)
class NoisySet:
    """Background-only videos added for weakly-supervised training."""

    audio: np.ndarray  # (M, 10, 128) float32
    visual: np.ndarray  # (M, 10, 7, 7, 512) float16 memmap
    labels: np.ndarray  # (M, 29) float32, all background

    def __len__(self) -> int:
        return len(self.labels)


def _check_shape(path: Path, shape: tuple[int, ...], want: tuple[int | None, ...], what: str) -> None:
    if len(shape) != len(want) or any(w is not None and s != w for s, w in zip(shape, want)):
        pretty = "(" + ",".join("N" if w is None else str(w) for w in want) + ")"
        raise AvelError(f"{what}: expected shape {pretty}, got {shape}", path)


class AVEDataset:
    """One AVE-layout dataset directory. Build with `AVEDataset.open(root)`.

    Arrays served to consumers: audio, visual_vec, labels, mil_labels, event_mask are float32;
    `visual` (and `noisy.visual`) are float16 memmaps: convert batches with `.astype(np.float32)`
    or `torch.as_tensor(batch).float()`.
    """

    def __init__(self, root: Path, catalog: Catalog, store: FeatureStore) -> None:
        self.root = root
        self.catalog = catalog
        self.store = store
        self.synth_meta = read_marker(root)  # AVE-Synth generator metadata, or None

    # ----------------------------------------------------------------- construction

    @classmethod
    def open(cls, root: str | Path, cache_dir: str | Path | None = None, progress: bool = True) -> "AVEDataset":
        """Validate the layout (cheaply: headers, not values) and return the dataset.

        Raises AvelError naming the offending file. Features are converted to the cache on first use.
        """
        root = Path(root)
        if not root.is_dir():
            raise AvelError("dataset directory not found", root)
        catalog = read_annotations(root / ANNOTATIONS)
        n = len(catalog)
        for name, row in ((AUDIO_FILE, AUDIO_ROW), (VISUAL_FILE, VISUAL_ROW)):
            info = inspect_h5(root / name)
            _check_shape(info.path, info.shape, (n, *row), f"{n} rows (Annotations.txt) of {row}")
        for s in SPLITS:
            path = root / ORDER_FILES[s]
            if not path.is_file():
                raise AvelError("split file not found", path)
        ds = cls(root, catalog, FeatureStore(cache_dir or default_cache_dir(root), progress=progress))
        ds._check_small_files()
        return ds

    def _check_small_files(self) -> None:
        n = len(self.catalog)
        want = {"labels": (n, NUM_SEGMENTS, NUM_CLASSES), "mil_labels": (n, NUM_CLASSES),
                "labels_closs": (n, NUM_SEGMENTS)}
        for key, name in LABEL_FILES.items():
            if (self.root / name).is_file():
                info = inspect_h5(self.root / name)
                _check_shape(info.path, info.shape, want[key], "label array")
        if (self.root / OBJECT_CELLS_FILE).is_file():
            info = inspect_h5(self.root / OBJECT_CELLS_FILE)
            _check_shape(info.path, info.shape, (n, NUM_SEGMENTS), "object cells")

    # ----------------------------------------------------------------- splits and labels

    def __len__(self) -> int:
        return len(self.catalog)

    @property
    def is_synthetic(self) -> bool:
        """True for an AVE-Synth directory (it carries the generator's marker file)."""
        return self.synth_meta is not None

    def split(self, name: str) -> np.ndarray:
        """int64 row indices of train/val/test or train_match/val_match/test_match, as stored."""
        files = {**{s: ORDER_FILES[s] for s in SPLITS}, **{f"{s}_match": MATCH_FILES[s] for s in SPLITS}}
        if name not in files:
            raise AvelError(f"unknown split '{name}' (choose from {', '.join(SPLIT_NAMES)})")
        return read_order(self.root / files[name], len(self.catalog))

    def _labels_file(self, key: str, derived: Callable[[Catalog], np.ndarray], align: bool = True) -> np.ndarray:
        """A label file's array, its class columns in the catalog's order (`align`), else derived."""
        path = self.root / LABEL_FILES[key]
        if not path.is_file():
            return derived(self.catalog)
        arr = read_h5(path).astype(np.float32)
        return align_label_columns(arr, self.catalog, path) if align else arr

    @cached_property
    def labels(self) -> np.ndarray:
        """(N, 10, 29) float32 per-second one-hot (labels.h5, or derived from Annotations.txt); column c
        is `catalog.categories[c]` whatever column order the file uses."""
        return self._labels_file("labels", segment_labels)

    @cached_property
    def mil_labels(self) -> np.ndarray:
        """(N, 29) float32 video-level one-hot (mil_labels.h5, or derived), columns as `labels`."""
        return self._labels_file("mil_labels", video_labels)

    @cached_property
    def event_mask(self) -> np.ndarray:
        """(N, 10) float32, 1 in event seconds (labels_closs.h5, or derived)."""
        return self._labels_file("labels_closs", event_mask, align=False)

    # ----------------------------------------------------------------- features (memory-mapped)

    @cached_property
    def audio(self) -> np.ndarray:
        """(N, 10, 128) float32 memmap of audio_feature.h5."""
        return self.store.array(self.root / AUDIO_FILE, np.float32)

    @cached_property
    def visual(self) -> np.ndarray:
        """(N, 10, 7, 7, 512) float16 memmap of visual_feature.h5 (cast batches to float32)."""
        return self.store.array(self.root / VISUAL_FILE, VISUAL_CACHE_DTYPE)

    @cached_property
    def visual_vec(self) -> np.ndarray:
        """(N, 10, 512) float32 memmap: visual_feature_vec.h5, or the 7x7 mean of visual_feature.h5."""
        path = self.root / VISUAL_VEC_FILE
        n = len(self.catalog)
        if path.is_file():
            info = inspect_h5(path)
            _check_shape(path, info.shape, (n, *VISUAL_VEC_ROW), "pooled visual features")
            return self.store.array(path, np.float32)
        return self.store.array(self.root / VISUAL_FILE, np.float32,
                                transform=("grid_mean", grid_mean, VISUAL_VEC_ROW))

    @cached_property
    def noisy(self) -> NoisySet | None:
        """Background-only videos, or None when the three *_noisy.h5 files are absent."""
        paths = {k: self.root / v for k, v in NOISY_FILES.items()}
        present = [k for k, p in paths.items() if p.is_file()]
        if not present:
            return None
        if len(present) < len(paths):
            missing = next(p for k, p in paths.items() if k not in present)
            raise AvelError("missing (the background-only set needs all three *_noisy.h5 files)", missing)
        labels = read_h5(paths["labels"]).astype(np.float32)
        m = len(labels)
        _check_shape(paths["labels"], labels.shape, (m, NUM_CLASSES), "noisy labels")
        audio = self.store.array(paths["audio"], np.float32)
        _check_shape(paths["audio"], audio.shape, (m, *AUDIO_ROW), f"{m} rows (labels_noisy.h5) of {AUDIO_ROW}")
        visual = self.store.array(paths["visual"], VISUAL_CACHE_DTYPE)
        _check_shape(paths["visual"], visual.shape, (m, *VISUAL_ROW), f"{m} rows of {VISUAL_ROW}")
        return NoisySet(audio=audio, visual=visual, labels=labels)

    @cached_property
    def object_cells(self) -> np.ndarray | None:
        """(N, 10) int64 ground-truth cell (0..48, row-major 7x7) of the sounding object, -1 where none."""
        path = self.root / OBJECT_CELLS_FILE
        return read_h5(path).astype(np.int64) if path.is_file() else None

    @cached_property
    def audio_map(self) -> np.ndarray | None:
        """(N, 10, 6, 4, 512) float16 memmap of spatial audio maps (AVE-Synth --audio-maps), or None."""
        path = self.root / AUDIO_MAP_FILE
        if not path.is_file():
            return None
        arr = self.store.array(path, VISUAL_CACHE_DTYPE)
        if arr.ndim != 5 or arr.shape[:2] != (len(self.catalog), NUM_SEGMENTS):
            raise AvelError(f"expected shape (N,10,H,W,C) with N={len(self.catalog)}, got {arr.shape}", path)
        return arr

    def __repr__(self) -> str:
        kind = "AVE-Synth" if self.is_synthetic else "AVE"
        return f"AVEDataset({str(self.root)!r}, {kind}, {len(self)} rows)"


# Optional model inputs (ModelSpec.inputs) -> the dataset file that provides them.
INPUT_FILES = {"audio_map": AUDIO_MAP_FILE}


def missing_input_files(root: str | Path, inputs: tuple[str, ...]) -> list[str]:
    """Files of a dataset directory that the model inputs `inputs` need but that are absent."""
    return [INPUT_FILES[k] for k in inputs if k in INPUT_FILES and not (Path(root) / INPUT_FILES[k]).is_file()]


def require_model_inputs(root: str | Path, model: str, inputs: tuple[str, ...]) -> None:
    """Refuse, before any work, a model whose inputs the dataset does not hold (e.g. A' models without
    audio maps): one line naming the missing file."""
    missing = missing_input_files(root, inputs)
    if missing:
        raise AvelError(f"model '{model}' needs {missing[0]}, which this dataset lacks (AVE-Synth writes it "
                        "with `avel data synth --audio-maps`)", Path(root) / missing[0])


class SplitView:
    """A dataset with other split rows: everything else (features, labels, catalog) is the wrapped
    dataset's. For experiments that need another split than the stored one (e.g. a larger test
    split for tighter estimates); train(SplitView(ds, {...}), ...) trains on it like on ds."""

    def __init__(self, ds, splits: dict[str, np.ndarray]) -> None:
        self._ds, self._splits = ds, {k: np.asarray(v, dtype=np.int64) for k, v in splits.items()}

    def __getattr__(self, name: str):
        return getattr(self._ds, name)

    def __len__(self) -> int:
        return len(self._ds)

    def split(self, name: str) -> np.ndarray:
        if name not in self._splits:
            raise AvelError(f"unknown split '{name}' (this view has {', '.join(self._splits)})")
        return self._splits[name]
