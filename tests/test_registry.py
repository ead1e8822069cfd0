"""Every registered model, and every fusion x stage of A+V-att: forward, backward, shapes, no NaN.

Loops over `list_models()`, so a model another module registers later is checked the moment it
exists; inputs are fed according to the model's declared `inputs` (e.g. "audio_map").
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avel.models.fusion import FUSIONS
from avel.models.localizers import FUSION_STAGES
from avel.models.registry import ModelConfig, create_model, list_models, model_spec

B, T = 2, 10


pytestmark = pytest.mark.usefixtures("one_thread")
AUDIO_MAP_SHAPE = (6, 4, 512)  # spatial audio map (H, W, C) for models that read "audio_map"


def make_batch(inputs: tuple[str, ...], cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "audio": (B, T, cfg.audio_dim),
        "visual": (B, T, cfg.visual_grid, cfg.visual_grid, cfg.visual_dim),
        "audio_map": (B, T, *(cfg.audio_map_shape or AUDIO_MAP_SHAPE)),
    }
    unknown = set(inputs) - set(shapes)
    assert not unknown, f"test_registry does not know how to make inputs {unknown}"
    # Non-negative like post-ReLU CNN features.
    return {k: torch.rand(shapes[k], generator=g) for k in inputs}


def check_model(cfg: ModelConfig) -> None:
    spec = model_spec(cfg.name)
    torch.manual_seed(0)
    model = create_model(cfg)
    batch = make_batch(spec.inputs, cfg)
    out = model(**batch)
    assert out.logits.shape == (B, T, cfg.num_classes)
    assert torch.isfinite(out.logits).all()
    if out.attention is not None:
        assert out.attention.shape[:2] == (B, T)
        assert torch.allclose(out.attention.sum(-1), torch.ones(B, T), atol=1e-5)
        assert (out.attention >= 0).all()
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, cfg.num_classes),
                                             torch.arange(B * T) % cfg.num_classes)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), "missing or non-finite gradient"
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model(name: str) -> None:
    cfg = ModelConfig(name=name)
    if "audio_map" in model_spec(name).inputs:
        cfg = dataclasses.replace(cfg, audio_map_shape=AUDIO_MAP_SHAPE)
    check_model(cfg)


@pytest.mark.parametrize("stage", list(FUSION_STAGES))
@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_av_att_every_fusion_and_stage(fusion: str, stage: str) -> None:
    check_model(ModelConfig(name="A+V-att", fusion=fusion, fusion_stage=stage))


@pytest.mark.parametrize("name", list_models())
def test_models_accept_any_length(name: str) -> None:
    """`avel localize` runs models on videos longer than 10 s: T is not fixed."""
    cfg = ModelConfig(name=name)
    if "audio_map" in model_spec(name).inputs:
        cfg = dataclasses.replace(cfg, audio_map_shape=AUDIO_MAP_SHAPE)
    model = create_model(cfg).eval()
    batch = make_batch(model_spec(name).inputs, cfg)
    long = {k: torch.cat([v, v[:, :7]], dim=1) for k, v in batch.items()}  # T = 17
    with torch.no_grad():
        out = model(**long)
    assert out.logits.shape == (B, 17, cfg.num_classes)


def test_unknown_model_lists_valid_ones() -> None:
    from avel.errors import AvelError

    with pytest.raises(AvelError) as exc:
        create_model(ModelConfig(name="A+V-attention"))
    msg = str(exc.value)
    assert "A+V-att" in msg and "DMRN" in msg and "\n" not in msg
