"""Feature store: conversion equals the source, reuse, rebuild on change, resumable and atomic."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from avel.data import store as store_mod
from avel.data.store import FeatureStore, default_cache_dir, grid_mean
from avel.errors import AvelError


def _write(path, arr, key="avadataset"):
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=arr)


@pytest.fixture
def source(tmp_path):
    arr = np.random.default_rng(0).gamma(1.0, 1.0, (40, 10, 3, 3, 16))  # float64 like the release
    path = tmp_path / "visual_feature.h5"
    _write(path, arr)
    return path, arr


def test_random_rows_equal_the_source(source, tmp_path):
    path, arr = source
    st = FeatureStore(tmp_path / "cache", progress=False)
    f32 = st.array(path, np.float32)
    f16 = st.array(path, np.float16, name="visual16")
    assert isinstance(f32, np.memmap) and f32.shape == arr.shape and f32.dtype == np.float32
    rows = np.random.default_rng(1).permutation(40)[:13]  # unsorted random access
    np.testing.assert_array_equal(f32[rows], arr[rows].astype(np.float32))
    np.testing.assert_array_equal(f16[rows], arr[rows].astype(np.float16))
    with pytest.raises(ValueError):
        f32[0, 0, 0, 0, 0] = 1.0  # served read-only


def test_derived_grid_mean(source, tmp_path):
    path, arr = source
    vec = FeatureStore(tmp_path / "cache", progress=False).array(path, np.float32,
                                                                 transform=("grid_mean", grid_mean, (10, 16)))
    assert vec.shape == (40, 10, 16)
    np.testing.assert_allclose(vec, arr.mean(axis=(2, 3)), rtol=1e-6)


def test_reused_then_rebuilt_when_the_source_changes(source, tmp_path, monkeypatch):
    path, arr = source
    st = FeatureStore(tmp_path / "cache", progress=False)
    st.array(path)
    conversions = []
    real = FeatureStore._convert
    monkeypatch.setattr(FeatureStore, "_convert", lambda self, *a: conversions.append(a[0].path) or real(self, *a))
    st.array(path)
    assert conversions == []  # reused
    new = arr[::-1].copy()
    _write(path, new)  # same size, new content and mtime
    np.testing.assert_array_equal(st.array(path)[:], new.astype(np.float32))
    assert conversions == [path]
    # A change the modification time does not show (restored mtime) is caught by the sampled hash.
    stat = path.stat()
    with h5py.File(path, "r+") as f:
        f["avadataset"][5] = 0.0
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (st.array(path)[5] == 0).all()
    assert len(conversions) == 2


def test_crash_mid_conversion_is_never_trusted_and_resumes(source, tmp_path, monkeypatch):
    path, arr = source
    row_bytes = 10 * 3 * 3 * 16 * 8
    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 8 * row_bytes)  # 5 chunks of 8 rows
    real_write_json = store_mod.write_json
    progress = []

    def crash_on_third_chunk(p, obj):
        if p.name.endswith(".progress.json"):
            if len(progress) == 2:
                raise KeyboardInterrupt
            progress.append(obj["rows_done"])
        real_write_json(p, obj)

    monkeypatch.setattr(store_mod, "write_json", crash_on_third_chunk)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        FeatureStore(cache, progress=False).array(path)
    assert progress == [8, 16]
    assert not (cache / "visual_feature.json").exists() and not (cache / "visual_feature.npy").exists()
    assert (cache / "visual_feature.npy.part").exists()
    monkeypatch.setattr(store_mod, "write_json", real_write_json)
    resumed = []
    real_resume = store_mod._resume_rows
    monkeypatch.setattr(store_mod, "_resume_rows", lambda *a: resumed.append(real_resume(*a)) or resumed[-1])
    out = FeatureStore(cache, progress=False).array(path)
    assert resumed == [16]
    np.testing.assert_array_equal(out[:], arr.astype(np.float32))
    meta = json.loads((cache / "visual_feature.json").read_text())
    assert meta["shape"] == [40, 10, 3, 3, 16] and meta["fingerprint"]["size"] == path.stat().st_size
    # The recorded checksum covers all source values, also after a resume.
    import hashlib
    assert meta["source_values_blake2b"] == hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()
    assert not list(cache.glob("*.part")) and not list(cache.glob("*.progress.json"))


def test_corrupt_cache_or_metadata_is_rebuilt(source, tmp_path):
    path, arr = source
    cache = tmp_path / "cache"
    st = FeatureStore(cache, progress=False)
    st.array(path)
    with open(cache / "visual_feature.npy", "r+b") as f:  # cache truncated behind our back
        f.truncate(1000)
    np.testing.assert_array_equal(st.array(path)[:], arr.astype(np.float32))
    (cache / "visual_feature.json").write_text("{not json")
    np.testing.assert_array_equal(st.array(path)[:], arr.astype(np.float32))


def test_bad_sources_raise_naming_the_file(tmp_path):
    st = FeatureStore(tmp_path / "cache", progress=False)
    with pytest.raises(AvelError, match="file not found") as e:
        st.array(tmp_path / "missing.h5")
    assert "missing.h5" in str(e.value)
    _write(tmp_path / "k.h5", np.zeros((2, 3)), key="features")
    with pytest.raises(AvelError, match="no dataset 'avadataset'"):
        st.array(tmp_path / "k.h5")
    _write(tmp_path / "big.h5", np.full((2, 3), 1e6))
    with pytest.raises(AvelError, match="float16 range") as e:
        st.array(tmp_path / "big.h5", np.float16)
    assert "big.h5" in str(e.value)
    bad = np.ones((30, 4, 5))
    bad[17, 2, 3] = np.inf
    bad[23, 0, 0] = np.nan
    _write(tmp_path / "nan.h5", bad)
    with pytest.raises(AvelError, match="row 17: NaN or infinite") as e:
        st.array(tmp_path / "nan.h5")
    assert "nan.h5" in str(e.value)
    assert not list((tmp_path / "cache").glob("nan*.npy"))  # nothing a later run could trust
    _write(tmp_path / "t.h5", np.ones((50, 1000)))
    data = (tmp_path / "t.h5").read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(AvelError, match="truncated or corrupt") as e:
        st.array(tmp_path / "t.h5")
    assert "t.h5" in str(e.value)


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.delenv(store_mod.CACHE_ENV, raising=False)
    assert default_cache_dir(tmp_path) == tmp_path.resolve() / ".avel_cache"
    monkeypatch.setenv(store_mod.CACHE_ENV, str(tmp_path / "elsewhere"))
    d1, d2 = default_cache_dir(tmp_path / "a"), default_cache_dir(tmp_path / "b")
    assert d1.parent == tmp_path / "elsewhere" and d1 != d2


def test_real_release_file_from_a_read_only_folder(release, tmp_path):
    src = release / "audio_feature_noisy.h5"
    with h5py.File(src, "r") as f:
        ref = f["avadataset"][()]
    arr = FeatureStore(tmp_path / "cache", progress=False).array(src, np.float32)
    assert arr.shape == (178, 10, 128)
    np.testing.assert_array_equal(arr[[177, 3, 50]], ref[[177, 3, 50]].astype(np.float32))


def test_concurrent_processes_convert_once(source, tmp_path):
    """Two processes asking for the same cache at once: one converts, the other waits and reuses it."""
    import subprocess
    import sys

    path, arr = source
    code = ("import sys, numpy as np; from avel.data.store import FeatureStore; "
            "a = FeatureStore(sys.argv[1], progress=False).array(sys.argv[2]); print(float(np.asarray(a).sum()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache"), str(path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    sums = [float(p.communicate()[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sums[0] == sums[1] == pytest.approx(float(arr.astype(np.float32).sum()), rel=1e-5)
    meta = json.loads((tmp_path / "cache" / "visual_feature.json").read_text())
    assert meta["cache_bytes"] == (tmp_path / "cache" / "visual_feature.npy").stat().st_size
