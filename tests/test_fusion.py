"""Fusion methods (Table 2): each one's maths on tiny inputs, then shapes/gradients at all three stages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from avel.errors import AvelError
from avel.models.fusion import FUSIONS, create_fusion

pytestmark = pytest.mark.usefixtures("one_thread")


# (dim_a, dim_v, out_dim) of the three settings the paper compares:
STAGE_SIZES = {
    "early": (128, 512, 512),  # VGGish audio + attended VGG-19 visual, before the LSTMs (joint: 512)
    "late": (256, 256, 256),  # two BiLSTM outputs (2 x 128 hidden)
    "decision": (29, 29, 29),  # two class-score vectors, just before the softmax
}
EXPECTED = {"additive", "mp", "gated", "mb", "gmb", "gmu", "concat", "mrn", "dmrn"}


def _set(linear: nn.Linear, weight, bias=None) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        if bias is not None:
            linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def test_registry_holds_every_table2_fusion():
    assert EXPECTED <= set(FUSIONS)
    with pytest.raises(AvelError, match="unknown fusion 'nope'"):
        create_fusion("nope", 4, 4, 4)


def test_additive_is_the_sum_when_sizes_match():
    f = create_fusion("additive", 3, 3, 3)
    a, v = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[0.25, 4.0, -0.5]])
    assert torch.equal(f(a, v), torch.tensor([[1.25, 2.0, 0.0]]))
    assert sum(p.numel() for p in f.parameters()) == 0


def test_additive_projects_unequal_sizes():
    f = create_fusion("additive", 2, 3, 2)
    assert isinstance(f.P_a, nn.Identity)  # audio already has out_dim
    _set(f.P_v, [[1.0, 1.0, 1.0], [0.0, 0.0, -1.0]], [0.5, 0.0])
    out = f(torch.tensor([3.0, -1.0]), torch.tensor([1.0, 2.0, 3.0]))
    # P_a a = [3, -1], P_v v = [6.5, -3]
    assert torch.allclose(out, torch.tensor([9.5, -4.0]))


def test_mp_is_the_elementwise_max():
    f = create_fusion("mp", 4, 4, 4)
    a, v = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([0.25, 4.0, -0.5, 3.0])
    assert torch.equal(f(a, v), torch.tensor([1.0, 4.0, 0.5, 3.0]))


def test_gated_multiplies_visual_by_audio_sigmoid_gate():
    f = create_fusion("gated", 1, 2, 2)
    _set(f.gate, [[1.0], [-1.0]], [0.0, 0.0])
    out = f(torch.tensor([math.log(3.0)]), torch.tensor([2.0, 8.0]))
    # sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4
    assert torch.allclose(out, torch.tensor([1.5, 2.0]))


def test_mb_shape_and_equals_its_full_bilinear_tensor():
    torch.manual_seed(0)
    f = create_fusion("mb", 5, 7, 3)
    a, v = torch.randn(2, 4, 5), torch.randn(2, 4, 7)
    out = f(a, v)
    assert out.shape == (2, 4, 3) and f.out_dim == 3
    W = f.full_tensor().detach().numpy()  # (3, 5, 7)
    ref = np.einsum("bta,kav,btv->btk", a.numpy(), W, v.numpy()) + f.P.bias.detach().numpy()
    assert np.allclose(out.detach().numpy(), ref, atol=1e-5)
    # bilinear: scaling either input scales the (bias-free) output
    bias = f.P.bias
    assert torch.allclose(f(2 * a, v) - bias, 2 * (out - bias), atol=1e-5)
    assert torch.allclose(f(a, -3 * v) - bias, -3 * (out - bias), atol=1e-5)


def test_mb_parameter_count_stays_sane_for_late_fusion():
    f = create_fusion("mb", 256, 256, 256)
    n = sum(p.numel() for p in f.parameters())
    assert n == 256 * (256 + 256 + 256) + 256  # rank 256, vs 16.8 M for the full tensor


def test_gmb_is_gate_times_bilinear():
    torch.manual_seed(1)
    f = create_fusion("gmb", 3, 4, 2)
    a, v = torch.randn(5, 3), torch.randn(5, 4)
    expected = torch.sigmoid(f.gate(a)) * f.bilinear(a, v)
    assert torch.allclose(f(a, v), expected)
    assert not torch.allclose(f(a, v), f.bilinear(a, v))


def test_gmu_gate_in_unit_interval_and_output_is_gate_weighted_mix():
    torch.manual_seed(2)
    f = create_fusion("gmu", 6, 9, 5)
    a, v = 10 * torch.randn(64, 6), 10 * torch.randn(64, 9)
    h_a, h_v, z = f.parts(a, v)
    assert bool(((z >= 0) & (z <= 1)).all())
    out = f(a, v)
    assert torch.allclose(out, z * h_a + (1 - z) * h_v)
    lo, hi = torch.minimum(h_a, h_v), torch.maximum(h_a, h_v)
    assert bool(((out >= lo - 1e-6) & (out <= hi + 1e-6)).all())  # a convex mix of the two


def test_gmu_hand_computed():
    f = create_fusion("gmu", 1, 1, 1)
    _set(f.W_a, [[1.0]])
    _set(f.W_v, [[2.0]])
    _set(f.W_z, [[1.0, -1.0]])
    a, v = 0.5, 0.25
    z = 1 / (1 + math.exp(-(a - v)))
    expected = z * math.tanh(a) + (1 - z) * math.tanh(2 * v)
    assert f(torch.tensor([a]), torch.tensor([v])).item() == pytest.approx(expected, rel=1e-6)


def test_concat_ignores_out_dim():
    f = create_fusion("concat", 2, 3, 99)
    assert f.out_dim == 5
    assert torch.equal(f(torch.ones(2), torch.zeros(3)), torch.tensor([1.0, 1, 0, 0, 0]))


def _set_two_layer(seq: nn.Sequential, w1: float, b1: float, w2: float, b2: float) -> None:
    _set(seq[0], [[w1]], [b1])
    _set(seq[2], [[w2]], [b2])


def test_dmrn_update_against_hand_computed_value():
    f = create_fusion("dmrn", 1, 1, 1)
    _set_two_layer(f.U_a[0], 1.0, 0.0, 2.0, 0.1)  # U_a(h) = 2 tanh(h) + 0.1
    _set_two_layer(f.U_v[0], -1.0, 0.5, 1.0, 0.0)  # U_v(h) = tanh(0.5 - h)
    h_a, h_v = 0.5, -0.25
    merged = 0.5 * ((2 * math.tanh(h_a) + 0.1) + math.tanh(0.5 - h_v))  # f(h_a, h_v)
    a2, v2 = math.tanh(h_a + merged), math.tanh(h_v + merged)  # eqs. 5-6
    ua, uv = f.branches(torch.tensor([h_a]), torch.tensor([h_v]))
    assert ua.item() == pytest.approx(a2, rel=1e-6) and uv.item() == pytest.approx(v2, rel=1e-6)
    assert f(torch.tensor([h_a]), torch.tensor([h_v])).item() == pytest.approx(0.5 * (a2 + v2), rel=1e-6)


def test_dmrn_projects_unequal_inputs_only():
    assert sum(p.numel() for p in create_fusion("dmrn", 8, 8, 8).parameters()) == 4 * (8 * 8 + 8)
    f = create_fusion("dmrn", 4, 6, 8)
    assert isinstance(f.P_a, nn.Linear) and f.P_a.in_features == 4 and f.P_v.in_features == 6
    assert f(torch.randn(3, 4), torch.randn(3, 6)).shape == (3, 8)


def test_mrn_updates_only_audio_branch_hand_computed():
    f = create_fusion("mrn", 1, 1, 1)
    _set(f.shortcut[0], [[0.5]])
    _set(f.audio_map[0][0], [[1.0]], [0.0])
    _set(f.audio_map[0][2], [[2.0]], [0.0])
    _set(f.visual_map[0][0], [[-1.0]], [0.2])
    _set(f.visual_map[0][2], [[1.0]], [0.0])
    a, v = 0.3, 0.7
    expected = 0.5 * a + math.tanh(2 * math.tanh(a)) * math.tanh(math.tanh(0.2 - v))
    assert f(torch.tensor([a]), torch.tensor([v])).item() == pytest.approx(expected, rel=1e-6)
    # with the visual mapping silenced, the output is the audio shortcut alone
    _set(f.visual_map[0][2], [[0.0]], [0.0])
    assert f(torch.tensor([a]), torch.tensor([v])).item() == pytest.approx(0.5 * a, rel=1e-6)


@pytest.mark.parametrize("stage", list(STAGE_SIZES))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_fusion_at_every_stage(name: str, stage: str):
    dim_a, dim_v, out_dim = STAGE_SIZES[stage]
    torch.manual_seed(0)
    f = create_fusion(name, dim_a, dim_v, out_dim)
    a = torch.randn(2, 10, dim_a, requires_grad=True)
    v = torch.randn(2, 10, dim_v, requires_grad=True)
    out = f(a, v)
    assert out.shape == (2, 10, f.out_dim)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for x in (a, v):  # both modalities reach the joint representation
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in f.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    # works on a single vector and with T != 10
    assert f(torch.randn(dim_a), torch.randn(dim_v)).shape == (f.out_dim,)
    assert f(torch.randn(1, 3, dim_a), torch.randn(1, 3, dim_v)).shape == (1, 3, f.out_dim)


# --- DMRFE (late fusion only): average ensemble of DMRN blocks -------------------------------------

SMALL = dict(hidden=8, attention_dim=12, visual_dim=20, visual_grid=2, audio_dim=6)


def _dmrfe_batch(T: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"audio": torch.rand(2, T, 6, generator=g), "visual": torch.rand(2, T, 2, 2, 20, generator=g)}


def test_dmrfe_averages_the_blocks_probabilities():
    from avel.models.registry import ModelConfig, create_model, model_spec

    assert model_spec("DMRFE").inputs == ("audio", "visual")
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="DMRFE", **SMALL)).eval()
    assert len(model.blocks) == 2 and all(isinstance(b, FUSIONS["dmrn"]) for b in model.blocks)
    batch = _dmrfe_batch()
    out = model(**batch)
    # independent recomputation: shared attention + LSTMs, each block -> head -> softmax, then mean
    v_att, w = model.attention(batch["audio"], batch["visual"])
    h_a, h_v = model.temporal_a(batch["audio"]), model.temporal_v(v_att)
    p = [torch.softmax(head(block(h_a, h_v)), -1) for block, head in zip(model.blocks, model.heads)]
    mean = 0.5 * (p[0] + p[1])
    assert torch.allclose(out.probs, mean, atol=1e-6)
    assert torch.allclose(out.logits, mean.log(), atol=1e-5)
    assert torch.allclose(torch.softmax(out.logits, -1), out.probs, atol=1e-6)  # logits are log-probs
    assert torch.allclose(out.attention, w) and out.attention.shape == (2, 5, 4)
    assert not torch.allclose(p[0], p[1])  # two separately parameterised blocks


def test_dmrfe_is_late_dmrn_only():
    from avel.models.registry import ModelConfig, create_model

    create_model(ModelConfig(name="DMRFE", fusion="dmrn", fusion_stage="late", **SMALL))  # explicit is fine
    with pytest.raises(AvelError, match="DMRFE fixes fusion_stage to 'late'"):
        create_model(ModelConfig(name="DMRFE", fusion_stage="early", **SMALL))
    with pytest.raises(AvelError, match="DMRFE fixes fusion to 'dmrn'"):
        create_model(ModelConfig(name="DMRFE", fusion="gmu", **SMALL))
    model = create_model(ModelConfig(name="DMRFE", extra={"dmrfe_members": 3}, **SMALL))
    assert len(model.blocks) == 3 and model(**_dmrfe_batch(T=1)).logits.shape == (2, 1, 29)
