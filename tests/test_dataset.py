"""AVEDataset on generated data: the interface other modules rely on, and clear errors."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from avel.data import synth
from avel.data.dataset import SPLIT_NAMES, AVEDataset
from avel.data.labels import event_mask, segment_labels, video_labels
from avel.errors import AvelError


def _read(path, key="avadataset"):
    with h5py.File(path, "r") as f:
        return f[key][()]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 20-video AVE-Synth directory with audio maps, to copy and modify."""
    return synth.generate(tmp_path_factory.mktemp("ds") / "small", videos=20, categories=2, audio_maps=True,
                          progress=False)


def _copy(src, dst):
    return shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".avel_cache"))


def test_open_generated_dataset(tiny_synth, tmp_path):
    ds = AVEDataset.open(tiny_synth, cache_dir=tmp_path / "cache", progress=False)
    n = len(ds)
    assert n == 120 and ds.root == tiny_synth and ds.is_synthetic and ds.synth_meta["seed"] == 0
    assert ds.catalog.categories == synth.AVE_CATEGORIES[:6]
    shapes = {"audio": (n, 10, 128), "visual": (n, 10, 7, 7, 512), "visual_vec": (n, 10, 512),
              "labels": (n, 10, 29), "mil_labels": (n, 29), "event_mask": (n, 10), "object_cells": (n, 10)}
    for name, shape in shapes.items():
        assert getattr(ds, name).shape == shape, name
    assert ds.audio.dtype == np.float32 and ds.visual.dtype == np.float16 and ds.visual_vec.dtype == np.float32
    rows = np.array([7, 0, 119, 64])
    src_v = _read(tiny_synth / "visual_feature.h5")
    np.testing.assert_array_equal(ds.visual[rows], src_v[rows].astype(np.float16))
    np.testing.assert_array_equal(ds.audio[rows], _read(tiny_synth / "audio_feature.h5")[rows].astype(np.float32))
    np.testing.assert_allclose(ds.visual_vec[rows], src_v[rows].mean(axis=(2, 3)), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(ds.labels, segment_labels(ds.catalog))
    np.testing.assert_array_equal(ds.mil_labels, video_labels(ds.catalog))
    np.testing.assert_array_equal(ds.event_mask, event_mask(ds.catalog))
    np.testing.assert_array_equal(ds.object_cells, _read(tiny_synth / synth.OBJECT_CELLS_FILE))
    m = synth.default_noisy(n)
    assert ds.noisy.audio.shape == (m, 10, 128) and ds.noisy.visual.shape == (m, 10, 7, 7, 512)
    assert (ds.noisy.labels.argmax(1) == 28).all() and len(ds.noisy) == m
    assert ds.audio_map is None
    splits = {s: ds.split(s) for s in SPLIT_NAMES}
    assert all(v.dtype == np.int64 for v in splits.values())
    assert sum(len(splits[s]) for s in ("train", "val", "test")) == n
    assert (ds.event_mask[splits["test_match"]].sum(1) < 10).all()
    with pytest.raises(AvelError, match="unknown split"):
        ds.split("dev")


def test_labels_derived_when_missing_and_vec_file_used(small, tmp_path):
    root = _copy(small, tmp_path / "d")
    for name in ("labels.h5", "mil_labels.h5", "labels_closs.h5", synth.MARKER_FILE):
        (root / name).unlink()
    vec = np.random.default_rng(0).random((20, 10, 512))
    with h5py.File(root / "visual_feature_vec.h5", "w") as f:
        f.create_dataset("avadataset", data=vec)
    ds = AVEDataset.open(root, progress=False)
    assert not ds.is_synthetic
    np.testing.assert_array_equal(ds.labels, _read(small / "labels.h5"))
    np.testing.assert_array_equal(ds.mil_labels, _read(small / "mil_labels.h5"))
    np.testing.assert_array_equal(ds.event_mask, _read(small / "labels_closs.h5"))
    np.testing.assert_array_equal(ds.visual_vec, vec.astype(np.float32))
    assert ds.audio_map.shape == (20, 10, 6, 4, 512)
    np.testing.assert_array_equal(ds.audio_map[[3]], _read(small / synth.AUDIO_MAP_FILE)[[3]].astype(np.float16))
    assert (root / ".avel_cache" / "audio_feature_map.npy").is_file()  # cache beside the data


def test_cache_follows_a_regenerated_source(small, tmp_path):
    root = _copy(small, tmp_path / "d")
    ds = AVEDataset.open(root, progress=False)
    before = np.array(ds.audio[:])
    synth.generate(root, videos=20, categories=2, seed=9, progress=False)
    after = AVEDataset.open(root, progress=False).audio[:]
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, _read(root / "audio_feature.h5").astype(np.float32))


@pytest.mark.parametrize("case, match, culprit", [
    ("no_dir", "dataset directory not found", "nowhere"),
    ("no_visual", "file not found", "visual_feature.h5"),
    ("rows", "expected shape", "audio_feature.h5"),
    ("no_split", "split file not found", "val_order.h5"),
    ("half_noisy", "needs all three", "labels_noisy.h5"),
])
def test_open_errors_name_the_file(small, tmp_path, case, match, culprit):
    root = tmp_path / "nowhere" if case == "no_dir" else _copy(small, tmp_path / "d")
    if case == "no_visual":
        (root / "visual_feature.h5").unlink()
    elif case == "rows":
        with h5py.File(root / "audio_feature.h5", "w") as f:
            f.create_dataset("avadataset", data=np.zeros((19, 10, 128)))
    elif case == "no_split":
        (root / "val_order.h5").unlink()
    elif case == "half_noisy":
        (root / "labels_noisy.h5").unlink()
    with pytest.raises(AvelError, match=match) as e:
        ds = AVEDataset.open(root, progress=False)
        ds.noisy
    assert e.value.path is not None and e.value.path.name == culprit


def test_the_release_lacks_features(release):
    with pytest.raises(AvelError, match="file not found") as e:
        AVEDataset.open(release, progress=False)
    assert e.value.path.name == "audio_feature.h5"
