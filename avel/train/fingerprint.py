"""What a run was trained on, by content: checksums of the features, annotations, labels and split rows.

A run directory records this fingerprint in config.json (`data.fingerprint`). Resuming a run,
reusing a finished one or training into a directory whose fingerprint differs from the data at
hand is refused, naming what differs; `avel evaluate` on other data says so. Two datasets of the
same size and layout (a copied run directory pointed at another AVE-Synth, say) therefore never
pass for one another.

Feature checksums are the blake2b of the source values that avel.data.store computes while building
its cache (`served_checksum`), so fingerprinting costs no extra pass over the 8.3 GB visual file.
Arrays not served by the store (in-memory datasets) are hashed directly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from avel.data.store import served_checksum
from avel.models.registry import ModelConfig, model_spec
from avel.train.config import TrainConfig

FINGERPRINT_VERSION = 1  # bump when what is hashed changes (older fingerprints then read as different)
ANNOTATIONS_FILE = "Annotations.txt"

# fingerprint key -> how a difference is named in messages
WHAT: dict[str, str] = {
    "audio": "audio features", "visual": "visual features", "visual_vec": "pooled visual features",
    "audio_map": "audio maps", "noisy.audio": "background-only audio features",
    "noisy.visual": "background-only visual features", "noisy.labels": "background-only labels",
    "annotations": "annotations", "labels": "labels",
}


def dataset_name(ds: Any) -> str:
    """'AVE-Synth' for the generated stand-in, 'AVE' for real features: every run output says which."""
    return "AVE-Synth" if getattr(ds, "is_synthetic", False) else "AVE"


def dataset_summary(ds: Any) -> dict[str, Any]:
    """Which data a run's numbers come from, stated in its own outputs."""
    synthetic = bool(getattr(ds, "is_synthetic", False))
    root = getattr(ds, "root", None)
    return {"name": dataset_name(ds), "synthetic": synthetic, "root": str(root) if root is not None else None,
            "note": ("AVE-Synth is synthetic: its numbers test the implementation, not the paper's claims "
                     "about real video") if synthetic else "real AVE features"}


def _hash_bytes(*chunks: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def array_checksum(arr: Any) -> str:
    """The store's source-values checksum for a cached memmap, else a blake2b of the values."""
    recorded = served_checksum(arr)
    if recorded:
        return recorded
    a = np.ascontiguousarray(np.asarray(arr))
    return _hash_bytes(str(a.dtype).encode(), str(a.shape).encode(), a.tobytes())


def rows_checksum(rows: Any) -> str:
    """Hash of a split's int64 row indices, in stored order."""
    return _hash_bytes(np.ascontiguousarray(np.asarray(rows, dtype=np.int64)).tobytes())


def _annotations(ds: Any) -> str:
    root = getattr(ds, "root", None)
    path = Path(root) / ANNOTATIONS_FILE if root is not None else None
    if path is not None and path.is_file():
        return _hash_bytes(path.read_bytes())
    return array_checksum(np.asarray(ds.mil_labels, dtype=np.float32))  # no file: the video labels stand in


def data_fingerprint(ds: Any, inputs: tuple[str, ...], splits: tuple[str, ...], noisy: bool) -> dict[str, Any]:
    """Content fingerprint of what a run reads: the model's input features (`inputs`), the
    annotations, the per-second and video labels, the rows of each of `splits` and, with `noisy`,
    the background-only set."""
    fp: dict[str, Any] = {"version": FINGERPRINT_VERSION}
    for name in inputs:
        fp[name] = array_checksum(getattr(ds, name))
    fp["annotations"] = _annotations(ds)
    fp["labels"] = _hash_bytes(array_checksum(np.asarray(ds.labels, dtype=np.float32)).encode(),
                               array_checksum(np.asarray(ds.mil_labels, dtype=np.float32)).encode())
    fp["splits"] = {s: rows_checksum(ds.split(s)) for s in splits}
    extra = getattr(ds, "noisy", None) if noisy else None
    if extra is not None:
        for name in (*inputs, "labels"):
            arr = getattr(extra, name, None)
            if arr is not None:
                fp[f"noisy.{name}"] = array_checksum(arr)
    return fp


def run_fingerprint(ds: Any, model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    """The content fingerprint of what a run with these configs reads from `ds`."""
    return data_fingerprint(ds, model_spec(model_cfg.name).inputs,
                            (train_cfg.train_split, train_cfg.val_split, train_cfg.test_split),
                            noisy=bool(model_cfg.weak and train_cfg.use_noisy))


def _short(v: Any) -> str:
    return f"{v[:4]}.." if isinstance(v, str) else ("none" if v is None else str(v))


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words: ['visual features differ: ab12.. -> cd34..', ...]."""
    out = []
    if old.get("version") != new.get("version"):
        out.append(f"fingerprint version differs: {old.get('version')} -> {new.get('version')}")
    keys = [*new, *(k for k in old if k not in new)]  # features first, in the order they were fingerprinted
    for key in keys:
        if key == "version" or old.get(key) == new.get(key):
            continue
        if key == "splits":
            old_s, new_s = old.get("splits") or {}, new.get("splits") or {}
            out += [f"{s} split rows differ: {_short(old_s.get(s))} -> {_short(new_s.get(s))}"
                    for s in [*new_s, *(s for s in old_s if s not in new_s)] if old_s.get(s) != new_s.get(s)]
        else:
            out.append(f"{WHAT.get(key, key)} differ: {_short(old.get(key))} -> {_short(new.get(key))}")
    return out
