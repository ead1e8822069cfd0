"""The supplement's Figure 1 in the reproduce report: visual-guided audio attention maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["A'-att", "A'+V-co-att"])
def test_audio_attention_maps_are_the_models_weights(name, tmp_path):
    from avel.models.registry import ModelConfig, create_model
    from avel.report import figures
    from avel.report.draw import audio_attention_maps

    torch.manual_seed(0)
    cfg = ModelConfig(name=name, hidden=8, attention_dim=8, visual_dim=16, visual_grid=2,
                      audio_map_shape=(6, 4, 12))
    model = create_model(cfg)
    g = np.random.default_rng(0)
    inputs = {"visual": g.random((3, 5, 2, 2, 16), dtype=np.float32),
              "audio_map": g.random((3, 5, 6, 4, 12), dtype=np.float32)}
    maps = audio_attention_maps(model, inputs, (6, 4))
    assert maps.shape == (3, 5, 6, 4)
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-5)  # a distribution over the cells
    with torch.no_grad():
        direct = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).audio_attention
    np.testing.assert_allclose(maps.reshape(3, 5, 24), direct.numpy(), rtol=1e-6)  # row-major (time, mel)
    png = figures.audio_attention_grid(tmp_path / "f.png", maps, ["a", "b", "c"],
                                       seconds_labels=np.ones((3, 5), bool), model=name)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_without_audio_attention_draw_nothing():
    from avel.models.registry import ModelConfig, create_model
    from avel.report.draw import audio_attention_maps

    model = create_model(ModelConfig(name="A'", hidden=8, audio_map_shape=(6, 4, 12)))
    assert audio_attention_maps(model, {"audio_map": np.zeros((1, 2, 6, 4, 12), np.float32)}, (6, 4)) is None
