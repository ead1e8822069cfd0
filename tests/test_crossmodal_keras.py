"""Import of the authors' Keras AVDLN weights: a file in the exact layout of theirs, and the real one."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from avel.crossmodal.data import CrossModalData
from avel.crossmodal.evaluate import distance_matrices, evaluate_model
from avel.crossmodal.keras_import import load_keras_avdln, read_keras_dense
from avel.errors import AvelError

# Layer list and shapes of the released cmm_model_weights.h5 (Keras 2.1.4, TensorFlow backend).
LAYER_NAMES = ["input_1", "input_2", "dense_1", "dense_3", "leaky_re_lu_1", "leaky_re_lu_2", "dense_2", "dense_4",
               "lambda_1"]
DENSE_SHAPES = {"dense_1": (512, 128), "dense_2": (128, 64), "dense_3": (128, 128), "dense_4": (128, 64)}

pytestmark = pytest.mark.usefixtures("one_thread")



def write_keras_weights(path: Path, weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write a Keras 2 `save_weights` file the way Keras 2.1.4 does (groups, attrs, dtypes)."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.4"
        f.attrs["layer_names"] = np.array([n.encode() for n in LAYER_NAMES], dtype="S13")
        for name in LAYER_NAMES:
            g = f.create_group(name)
            if name in weights:
                g.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()],
                                                   dtype="S16")
                kernel, bias = weights[name]
                g.create_dataset(f"{name}/kernel:0", data=kernel.astype(np.float32))
                g.create_dataset(f"{name}/bias:0", data=bias.astype(np.float32))
            else:
                g.attrs["weight_names"] = np.array([], dtype=np.float64)  # what Keras writes for no weights


def random_weights(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {n: (rng.normal(0, 0.1, s), rng.normal(0, 0.1, s[1])) for n, s in DENSE_SHAPES.items()}


def keras_forward(w: dict, visual: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """scmm_net in numpy (float64): Dense, LeakyReLU(0.3), Dense per branch; the Lambda distance."""
    def dense(x, name):
        kernel, bias = w[name]
        return x @ kernel + bias

    def leaky(x):
        return np.where(x > 0, x, 0.3 * x)

    rv = dense(leaky(dense(visual, "dense_1")), "dense_2")
    ra = dense(leaky(dense(audio, "dense_3")), "dense_4")
    return np.sqrt(np.maximum(np.sum((rv - ra) ** 2, axis=1, keepdims=True), 1e-7))  # K.epsilon() = 1e-7


def test_layout_matches_the_released_file(release, tmp_path):
    """The test writer reproduces the real file's structure (guards the tests below)."""
    def structure(path):
        out = {}
        with h5py.File(path, "r") as f:
            out["/"] = sorted(f.attrs.keys()), [x.decode() for x in f.attrs["layer_names"]]
            f.visititems(lambda name, obj: out.__setitem__(
                name, (type(obj).__name__, sorted((k, str(v.dtype)) for k, v in obj.attrs.items()),
                       getattr(obj, "shape", None),
                       str(getattr(obj, "dtype", "")))))
        return out

    mine = tmp_path / "w.h5"
    write_keras_weights(mine, random_weights())
    assert structure(release / "cmm_model_weights.h5") == structure(mine)


def test_distances_equal_the_keras_forward_pass(tmp_path):
    w = random_weights(1)
    path = tmp_path / "cmm.h5"
    write_keras_weights(path, w)
    model = load_keras_avdln(path)
    rng = np.random.default_rng(2)
    visual, audio = rng.normal(size=(64, 512)), rng.normal(size=(64, 128))
    w32 = {k: (a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
           for k, (a, b) in w.items()}  # the file holds float32
    want = keras_forward(w32, visual.astype(np.float32), audio.astype(np.float32))[:, 0]
    with torch.no_grad():
        got = model(torch.tensor(audio, dtype=torch.float32), torch.tensor(visual, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_epsilon_floor_as_keras(tmp_path):
    # Second layers with zero kernels and equal biases: both embeddings equal -> sqrt(epsilon).
    w = random_weights(3)
    w["dense_2"] = (np.zeros((128, 64)), np.full(64, 0.5))
    w["dense_4"] = (np.zeros((128, 64)), np.full(64, 0.5))
    path = tmp_path / "cmm.h5"
    write_keras_weights(path, w)
    with torch.no_grad():
        d = load_keras_avdln(path)(torch.randn(5, 128), torch.randn(5, 512))
    np.testing.assert_allclose(d.numpy(), np.sqrt(1e-7), rtol=1e-6)


def test_wrong_layer_shape_names_file_and_layer(tmp_path):
    w = random_weights()
    w["dense_3"] = (np.zeros((64, 128)), np.zeros(128))  # audio branch built for 64-d input
    path = tmp_path / "bad.h5"
    write_keras_weights(path, w)
    with pytest.raises(AvelError) as exc:
        load_keras_avdln(path)
    msg = str(exc.value)
    assert str(path) in msg and "dense_3" in msg and "(64, 128)" in msg and "(128, 128)" in msg
    assert "\n" not in msg


def test_missing_layer_and_non_keras_files(tmp_path):
    w = random_weights()
    del w["dense_4"]
    path = tmp_path / "three.h5"
    write_keras_weights(path, w)
    with pytest.raises(AvelError, match="expected 4 Dense layers .* found 3: dense_1, dense_2, dense_3"):
        load_keras_avdln(path)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("avadataset", data=np.zeros(3))
    with pytest.raises(AvelError, match="no 'layer_names'"):
        load_keras_avdln(plain)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(AvelError, match="not a readable HDF5"):
        load_keras_avdln(junk)
    with pytest.raises(AvelError, match="not found"):
        load_keras_avdln(tmp_path / "absent.h5")


def test_full_model_save_layout_is_accepted(tmp_path):
    w = random_weights(4)
    inner = tmp_path / "inner.h5"
    write_keras_weights(inner, w)
    full = tmp_path / "full.h5"
    with h5py.File(inner, "r") as src, h5py.File(full, "w") as dst:
        g = dst.create_group("model_weights")
        for k, v in src.attrs.items():
            g.attrs[k] = v
        for name in src:
            src.copy(name, g)
    a, v = torch.randn(4, 128), torch.randn(4, 512)
    with torch.no_grad():
        torch.testing.assert_close(load_keras_avdln(full)(a, v), load_keras_avdln(inner)(a, v))


def test_real_release_weights_load_and_evaluate(release):
    path = release / "cmm_model_weights.h5"
    dense = read_keras_dense(path)
    assert [(n, k.shape, b.shape) for n, k, b in dense] == [
        (n, s, (s[1],)) for n, s in DENSE_SHAPES.items()]
    model = load_keras_avdln(path)
    with h5py.File(path, "r") as f:
        kernel = f["dense_3"]["dense_3/kernel:0"][()]
    np.testing.assert_array_equal(model.audio[0].weight.detach().numpy(), kernel.T)
    # evaluation runs on features of the right sizes (real AVE features are not in the release)
    rng = np.random.default_rng(0)
    mask = np.zeros((6, 10), np.float32)
    for i in range(6):
        mask[i, i:i + 1 + i % 3] = 1
    data = CrossModalData(audio=rng.normal(size=(6, 10, 128)).astype(np.float32),
                          visual=np.abs(rng.normal(size=(6, 10, 512))).astype(np.float32),
                          event_mask=mask, rows=np.arange(6), name="test_match")
    dm = distance_matrices(model, data)
    assert dm.shape == (6, 10, 10) and np.isfinite(dm).all() and (dm > 0).all()
    res = evaluate_model(model, data)
    assert res.evaluated == 6 and 0 <= res.accuracy("A2V") <= 100
    # same distances as the numpy Keras forward pass with the released weights
    w = {n: (k.astype(np.float64), b.astype(np.float64)) for n, k, b in dense}
    want = keras_forward(w, data.visual[0].astype(np.float64), data.audio[0].astype(np.float64))[:, 0]
    np.testing.assert_allclose(np.diagonal(dm[0]), want, rtol=1e-4)
