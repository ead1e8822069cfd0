"""Cross-modal training runs: learning on planted data, repeatability, resume, run directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import avel.crossmodal.train as train_mod
from avel.crossmodal.checkpoint import CONFIG, METRICS, STATE, WEIGHTS, load_model
from avel.crossmodal.data import CrossModalData
from avel.crossmodal.evaluate import evaluate_model
from avel.crossmodal.models import CrossModalConfig
from avel.crossmodal.train import CrossModalTrainConfig, train_run
from avel.errors import AvelError


pytestmark = pytest.mark.usefixtures("one_thread")


def planted(n: int, seed: int, name: str) -> CrossModalData:
    """Videos whose seconds each carry a latent code shown by both modalities (fixed random maps).

    Every second has its own code, so synchronized seconds are identifiable one by one; event
    spans are 2..6 s (and some videos are full-length, as in the real train split).
    """
    world = np.random.default_rng(1234)
    to_audio, to_visual = world.normal(size=(8, 128)), world.normal(size=(8, 512)) / 2
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 10, 8))
    audio = np.maximum(z @ to_audio + 0.3 * rng.normal(size=(n, 10, 128)), 0)
    visual = np.maximum(z @ to_visual + 0.3 * rng.normal(size=(n, 10, 512)), 0)
    mask = np.zeros((n, 10), np.float32)
    for i in range(n):
        length = 10 if i % 4 == 0 else int(rng.integers(2, 7))
        start = int(rng.integers(0, 11 - length))
        mask[i, start:start + length] = 1
    return CrossModalData(audio.astype(np.float32), visual.astype(np.float32), mask, np.arange(n) + 1000 * seed, name)


@pytest.fixture(scope="module")
def splits():
    return planted(60, 1, "train_match"), planted(16, 2, "val_match"), planted(24, 3, "test_match")


FAST = dict(epochs=3, batch_size=32, dcca_batch_size=128)


@pytest.mark.parametrize("method", ["avdln", "dcca"])
def test_learns_to_localize_planted_correspondence(tmp_path, splits, method):
    train, val, test = splits
    metrics = train_run(train, val, tmp_path / method, CrossModalConfig(method=method),
                        CrossModalTrainConfig(**FAST), progress=False)
    assert metrics["finished"] and len(metrics["history"]) == 3 and 1 <= metrics["best_epoch"] <= 3
    model, cfg = load_model(tmp_path / method)
    assert cfg["model"]["method"] == method
    res = evaluate_model(model, test)
    assert res.skipped["full_length"] == 6 and res.evaluated == 18
    assert res.chance < 25
    assert res.accuracy("A2V") >= 80 and res.accuracy("V2A") >= 80, res.to_dict()


def test_seeded_runs_are_identical_and_seeds_differ(tmp_path, splits):
    train, val, _ = splits
    cfg = CrossModalTrainConfig(**{**FAST, "epochs": 1})
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_run(train, val, tmp_path / name, CrossModalConfig(), CrossModalTrainConfig(**{**vars(cfg), "seed": seed}),
                  progress=False)
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    assert (tmp_path / "a" / WEIGHTS).read_bytes() != (tmp_path / "c" / WEIGHTS).read_bytes()


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, splits, monkeypatch):
    train, val, _ = splits
    cfg = CrossModalTrainConfig(**FAST)
    train_run(train, val, tmp_path / "whole", CrossModalConfig(), cfg, progress=False)

    real_epoch = train_mod.EPOCHS["avdln"]
    calls = {"n": 0}

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setitem(train_mod.EPOCHS, "avdln", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_run(train, val, tmp_path / "cut", CrossModalConfig(), cfg, progress=False)
    assert (tmp_path / "cut" / STATE).is_file() and not (tmp_path / "cut" / WEIGHTS).exists()
    with pytest.raises(AvelError, match="training not finished"):
        load_model(tmp_path / "cut")
    monkeypatch.setitem(train_mod.EPOCHS, "avdln", real_epoch)
    metrics = train_run(train, val, tmp_path / "cut", CrossModalConfig(), cfg, progress=False)
    assert len(metrics["history"]) == 3
    assert (tmp_path / "cut" / WEIGHTS).read_bytes() == (tmp_path / "whole" / WEIGHTS).read_bytes()
    whole = json.loads((tmp_path / "whole" / METRICS).read_text())
    assert metrics["history"] == whole["history"]


def test_finished_run_is_reused_and_other_settings_refused(tmp_path, splits, monkeypatch):
    train, val, _ = splits
    cfg = CrossModalTrainConfig(**{**FAST, "epochs": 1})
    first = train_run(train, val, tmp_path / "r", CrossModalConfig(), cfg, progress=False)

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setitem(train_mod.EPOCHS, "avdln", must_not_train)
    assert train_run(train, val, tmp_path / "r", CrossModalConfig(), cfg, progress=False) == first
    with pytest.raises(AvelError, match=r"different settings \(train.lr\)"):
        train_run(train, val, tmp_path / "r", CrossModalConfig(), CrossModalTrainConfig(**{**vars(cfg), "lr": 0.1}),
                  progress=False)


def test_run_directory_rebuilds_dcca_with_its_projection(tmp_path, splits):
    train, val, test = splits
    train_run(train, val, tmp_path / "d", CrossModalConfig(method="dcca", cca_dim=8),
              CrossModalTrainConfig(**{**FAST, "epochs": 1}), progress=False)
    cfg = json.loads((tmp_path / "d" / CONFIG).read_text())
    assert cfg["kind"] == "avel-crossmodal" and cfg["model"]["cca_dim"] == 8 and cfg["train"]["epochs"] == 1
    model, _ = load_model(tmp_path / "d")
    assert model.correlations.shape == (8,) and model.correlations[0] > 0.5  # fitted, not the zero init
    a, v = torch.from_numpy(test.audio[:2]), torch.from_numpy(test.visual[:2])
    again, _ = load_model(tmp_path / "d")
    torch.testing.assert_close(model.distance_matrix(a, v), again.distance_matrix(a, v))


def test_bad_run_directories(tmp_path, splits):
    with pytest.raises(AvelError, match="run directory not found"):
        load_model(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / CONFIG).write_text("{not json")
    with pytest.raises(AvelError, match="not valid JSON"):
        load_model(tmp_path / "x")
    (tmp_path / "x" / CONFIG).write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(AvelError, match="not a cross-modal run"):
        load_model(tmp_path / "x")
    train, val, _ = splits
    wrong = CrossModalData(train.audio[..., :64], train.visual, train.event_mask, train.rows, "train_match")
    with pytest.raises(AvelError, match="audio/visual features of size 64/512, the model expects 128/512"):
        train_run(wrong, val, tmp_path / "y", CrossModalConfig(), CrossModalTrainConfig(**FAST), progress=False)
