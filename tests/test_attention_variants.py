"""Supplement Sec. 3.2 models: the swapped-role attention against numpy, co-attention, A' pooling, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avel.errors import AvelError
from avel.models.attention import AudioGuidedAttention
from avel.models.registry import ModelConfig, create_model, model_spec

SHAPE = (3, 2, 16)  # a small (H, W, C) audio map
CFG = ModelConfig(audio_map_shape=SHAPE, hidden=8, attention_dim=12, visual_dim=20, visual_grid=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(T: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"visual": torch.rand(2, T, 2, 2, 20, generator=g), "audio_map": torch.rand(2, T, *SHAPE, generator=g)}


def _build(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(dataclasses.replace(CFG, name=name, **kw)).eval()


def _np_attention(att: AudioGuidedAttention, guide: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 2-4 in numpy for one second: guide (Dg,), regions (k, D) -> context (D,), weights (k,)."""
    p = {n: t.detach().numpy() for n, t in att.named_parameters()}
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    g = p["W_a.weight"] @ relu(p["U_a.weight"] @ guide + p["U_a.bias"])  # (k,)
    r = relu(regions @ p["U_v.weight"].T + p["U_v.bias"]) @ p["W_v.weight"].T  # (regions, k)
    x = np.tanh(r + g[None, :]) @ p["W_f.weight"][0]  # (regions,)
    w = np.exp(x - x.max())
    w /= w.sum()
    return w @ regions, w


def test_registered_with_the_inputs_they_read():
    assert model_spec("A'").inputs == ("audio_map",)
    for name in ("A'-att", "A'+V", "A'+V-co-att"):
        assert model_spec(name).inputs == ("visual", "audio_map")


def test_a_prime_is_an_lstm_on_the_globally_pooled_map():
    model, batch = _build("A'"), _batch()
    out = model(**batch)
    assert out.audio_attention is None and out.attention is None
    expected = model.body(batch["audio_map"].mean(dim=(2, 3)))
    assert torch.allclose(out.logits, expected)
    # the spatial layout is irrelevant once pooled: permuting the cells changes nothing
    perm = batch["audio_map"].flip(2).flip(3)
    assert torch.allclose(model(audio_map=perm).logits, out.logits, atol=1e-6)


def test_visual_guided_audio_attention_matches_numpy_eqs_2_to_4_with_roles_swapped():
    model, batch = _build("A'-att"), _batch()
    att = model.audio_att.att
    assert att.k == SHAPE[0] * SHAPE[1]  # one weight per audio cell
    out = model(**batch)
    w = out.audio_attention
    assert w.shape == (2, 4, 6) and torch.allclose(w.sum(-1), torch.ones(2, 4)) and (w >= 0).all()
    guide = batch["visual"].mean(dim=(2, 3)).numpy()  # pooled visual (B, T, 20)
    cells = batch["audio_map"].reshape(2, 4, 6, 16).numpy()  # row-major (h, w) cells
    ctx, _ = model.audio_att(batch["visual"].mean(dim=(2, 3)), batch["audio_map"])
    for b in range(2):
        for t in range(4):
            ref_ctx, ref_w = _np_attention(att, guide[b, t], cells[b, t])
            assert np.allclose(w[b, t].detach().numpy(), ref_w, atol=1e-5)
            assert np.allclose(ctx[b, t].detach().numpy(), ref_ctx, atol=1e-5)
    assert torch.allclose(out.logits, model.body(ctx))


def test_audio_attention_follows_the_visual_guide():
    model, batch = _build("A'-att"), _batch()
    w1 = model(**batch).audio_attention
    w2 = model(visual=batch["visual"].flip(0), audio_map=batch["audio_map"]).audio_attention
    assert not torch.allclose(w1, w2)  # the same audio, another visual context: other weights


def test_co_attention_runs_both_attentions_from_unattended_features():
    model, batch = _build("A'+V-co-att"), _batch()
    out = model(**batch)
    assert out.attention.shape == (2, 4, 4) and out.audio_attention.shape == (2, 4, 6)
    a_pool = batch["audio_map"].mean(dim=(2, 3)).numpy()
    v_pool = batch["visual"].mean(dim=(2, 3)).numpy()
    v_regions = batch["visual"].reshape(2, 4, 4, 20).numpy()
    a_cells = batch["audio_map"].reshape(2, 4, 6, 16).numpy()
    for b in range(2):
        for t in range(4):
            _, ref_v = _np_attention(model.visual_att, a_pool[b, t], v_regions[b, t])  # audio-guided visual
            _, ref_a = _np_attention(model.audio_att.att, v_pool[b, t], a_cells[b, t])  # visual-guided audio
            assert np.allclose(out.attention[b, t].detach().numpy(), ref_v, atol=1e-5)
            assert np.allclose(out.audio_attention[b, t].detach().numpy(), ref_a, atol=1e-5)
    # late concat fusion of two LSTMs on the two attended vectors (the default fusion)
    a_att, _ = model.audio_att(batch["visual"].mean(dim=(2, 3)), batch["audio_map"])
    v_att, _ = model.visual_att(batch["audio_map"].mean(dim=(2, 3)), batch["visual"])
    body = model.body
    expected = body.head(torch.cat([body.temporal_a(a_att), body.temporal_v(v_att)], dim=-1))
    assert torch.allclose(out.logits, expected, atol=1e-6)


def test_a_prime_plus_v_follows_the_configured_fusion():
    batch = _batch()
    for stage in ("early", "late", "decision"):
        out = _build("A'+V", fusion="gmu", fusion_stage=stage)(**batch)
        assert out.logits.shape == (2, 4, 29) and out.attention is None and out.audio_attention is None
    with pytest.raises(AvelError, match="unknown fusion stage"):
        _build("A'+V", fusion_stage="middle")


@pytest.mark.parametrize("name", ["A'", "A'-att", "A'+V", "A'+V-co-att"])
@pytest.mark.parametrize("T", [1, 13])
def test_any_length(name: str, T: int):
    out = _build(name)(**_batch(T))
    assert out.logits.shape == (2, T, 29) and torch.isfinite(out.logits).all()


def test_default_map_shape_is_vggish_pool5():
    model = create_model(ModelConfig(name="A'-att"))
    assert model.shape == (6, 4, 512) and model.audio_att.att.k == 24


def test_wrong_or_missing_audio_map_is_a_user_error():
    model, batch = _build("A'+V-co-att"), _batch()
    with pytest.raises(AvelError, match=r"built for audio maps of shape \(3, 2, 16\).*got \(6, 4, 16\)"):
        model(visual=batch["visual"], audio_map=torch.rand(2, 4, 6, 4, 16))
    with pytest.raises(AvelError, match="needs spatial audio maps"):
        model(visual=batch["visual"])
    with pytest.raises(AvelError, match="needs the visual"):
        _build("A'-att")(audio_map=batch["audio_map"])
