"""Per-channel input standardization (avel.train.standardize) and early stopping's minimum steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avel.data.dataset import AVEDataset
from avel.models.registry import ModelConfig, create_model
from avel.train import checkpoint as ckpt
from avel.train import standardize
from avel.train.config import TrainConfig
from avel.train.evaluate import evaluate_run, predict
from avel.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


class ScaledVisual:
    """A dataset whose visual maps (and background-only videos' maps) are multiplied by `factor`."""

    def __init__(self, ds, factor: float) -> None:
        self._ds = ds
        self.visual = np.asarray(ds.visual, np.float32) * np.float32(factor)

    def __getattr__(self, name: str):
        return getattr(self._ds, name)

    def __len__(self) -> int:
        return len(self._ds)


def test_fit_matches_numpy_and_is_scale_equivariant() -> None:
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(0.2, 1.0, (30, 10, 7, 7, 16)), 0).astype(np.float32)
    x[..., 3] = 0.0  # a dead channel: std floored, standardized value 0
    rows = np.array([0, 5, 7, 29, 12])
    mean, std = standardize.fit({"visual": x, "labels": x}, rows)["visual"]  # non-input keys are ignored
    ref = x[np.sort(rows)].reshape(-1, 16).astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-5, atol=1e-7)
    live = np.arange(16) != 3
    np.testing.assert_allclose(std[live], ref.std(0)[live], rtol=1e-5)
    assert std[3] == pytest.approx(standardize.REL_FLOOR * np.median(ref.std(0)[live]), rel=1e-5)
    m10, s10 = standardize.fit({"visual": x * 10}, rows)["visual"]
    np.testing.assert_allclose(m10, 10 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s10, 10 * std, rtol=1e-5)


def test_attached_model_standardizes_keyword_and_positional_inputs() -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="A+V", hidden=8))
    a, v = torch.rand(2, 10, 128) * 5, torch.rand(2, 10, 7, 7, 512) * 5
    stats = {"audio": (np.full(128, 2.0), np.full(128, 4.0)), "visual": (np.full(512, 1.0), np.full(512, 0.5))}
    plain = model(audio=(a - 2) / 4, visual=(v - 1) / 0.5).logits
    standardize.attach(model, stats)
    assert torch.allclose(model(audio=a, visual=v).logits, plain, atol=1e-6)
    assert torch.allclose(model(a, v).logits, plain, atol=1e-6)
    assert {"input_std.audio_mean", "input_std.visual_std"} <= model.state_dict().keys()


@pytest.fixture(scope="module")
def tiny_ds(tiny_synth):
    return AVEDataset.open(tiny_synth, progress=False)


def test_scaled_visual_features_give_the_same_predictions_fast(tiny_ds, tmp_path) -> None:
    """The fast variant of the next test: 32 training videos, one epoch; x10 visual features give the
    same test predictions as x1 with standardization, and different ones without it."""
    from avel.data.dataset import SplitView

    rows = tiny_ds.split("train")
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-3, num_threads=1)
    probs = {}
    for name, factor, std_on in (("x1", 1.0, True), ("x10", 10.0, True), ("raw x10", 10.0, False)):
        ds = SplitView(ScaledVisual(tiny_ds, factor), {"train": rows[:32], "val": rows[32:40], "test": rows[40:56]})
        train(ds, ModelConfig(name="V"), dataclasses.replace(cfg, standardize=std_on), tmp_path / name, progress=False)
        model, _, _ = ckpt.load_run(tmp_path / name)
        probs[name] = predict(model, visual=ds.visual[np.sort(rows[40:56])])[0]
    np.testing.assert_allclose(probs["x10"], probs["x1"], atol=2e-3)
    assert np.abs(probs["raw x10"] - probs["x1"]).max() > 0.05


@pytest.mark.slow
def test_scaling_the_visual_features_changes_nothing_with_standardization(tiny_ds, tmp_path) -> None:
    """V on a small AVE-Synth: visual features x0.1 and x10 give the same test predictions as x1
    (standardized inputs are identical up to float rounding), while another seed moves test
    accuracy by a measurable amount and the unstandardized recipe gives different predictions.
    The checkpoint holds the training split's statistics, and evaluate applies them."""
    cfg = TrainConfig(epochs=3, batch_size=16, lr=3e-3, num_threads=1, min_steps=0)
    mcfg = ModelConfig(name="V")
    test_rows = tiny_ds.split("test")
    runs, probs = {}, {}
    for name, factor, seed, std_on in (("x1", 1.0, 0, True), ("x0.1", 0.1, 0, True), ("x10", 10.0, 0, True),
                                       ("seed1", 1.0, 1, True), ("raw x0.1", 0.1, 0, False)):
        ds = ScaledVisual(tiny_ds, factor)
        out = tmp_path / name
        runs[name] = train(ds, mcfg, dataclasses.replace(cfg, seed=seed, standardize=std_on), out,
                           progress=False)["test"]["accuracy"]
        model, _, _ = ckpt.load_run(out)
        probs[name] = predict(model, visual=ds.visual[np.sort(test_rows)])[0]
    spread = abs(runs["x1"] - runs["seed1"])
    assert spread > 0, runs  # the seed matters: the comparison below is against a real spread
    for name in ("x0.1", "x10"):
        assert abs(runs[name] - runs["x1"]) < spread, runs
        np.testing.assert_allclose(probs[name], probs["x1"], atol=2e-3, err_msg=name)
    assert np.abs(probs["raw x0.1"] - probs["x1"]).max() > 0.05  # without it the scale does matter

    # The statistics in the checkpoint are the training split's, and evaluate applies them.
    model, _, _ = ckpt.load_run(tmp_path / "x10")
    pooled = np.asarray(tiny_ds.visual[np.sort(tiny_ds.split("train"))], np.float64).reshape(-1, 512) * 10
    np.testing.assert_allclose(model.input_std.visual_mean.numpy(), pooled.mean(0), rtol=1e-3, atol=1e-5)
    assert evaluate_run(tmp_path / "x1", tiny_ds)["accuracy"] == runs["x1"]


def test_no_standardize_keeps_the_model_plain(tiny_ds, tmp_path) -> None:
    cfg = TrainConfig(epochs=1, batch_size=32, num_threads=1, standardize=False)
    train(tiny_ds, ModelConfig(name="A"), cfg, tmp_path / "raw", progress=False)
    assert not any(k.startswith("input_std.") for k in ckpt.load_tensors(tmp_path / "raw" / ckpt.MODEL_WEIGHTS))
    model, _, _ = ckpt.load_run(tmp_path / "raw")
    assert not hasattr(model, "input_std")


def test_early_stopping_waits_for_min_steps(tmp_path, tiny_ds, monkeypatch) -> None:
    """Patience is exhausted after epoch 3, but no run stops before min_steps optimizer steps."""
    from avel.train import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod._Trainer, "_validate",
                        lambda self, model: {"val_accuracy": 50.0, "val_video_accuracy": 0.0, "val_loss": 1.0})
    steps_per_epoch = -(-len(tiny_ds.split("train")) // 32)
    cfg = TrainConfig(epochs=20, patience=2, batch_size=32, num_threads=1)
    early = train(tiny_ds, ModelConfig(name="A"), dataclasses.replace(cfg, min_steps=0), tmp_path / "a",
                  progress=False)
    assert (early["stopped"], early["epochs_run"]) == ("early stopping", 3)
    late = train(tiny_ds, ModelConfig(name="A"), dataclasses.replace(cfg, min_steps=5 * steps_per_epoch + 1),
                 tmp_path / "b", progress=False)
    assert (late["stopped"], late["epochs_run"]) == ("early stopping", 6)
