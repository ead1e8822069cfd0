"""The Table 1 building blocks against independent numpy implementations and hand-computed values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avel.errors import AvelError
from avel.models.attention import AudioGuidedAttention
from avel.models.localizers import FUSION_STAGES, Localizer, normalize_config, paper_name
from avel.models.registry import ModelConfig, create_model
from avel.train.losses import LOSSES, mil_pool


pytestmark = pytest.mark.usefixtures("one_thread")


def numpy_attention(att: AudioGuidedAttention, audio: np.ndarray, visual: np.ndarray):
    """Eqs. 2-4 written out per video and second, region by region, in float64."""
    p = {k: v.detach().double().numpy() for k, v in att.state_dict().items()}
    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    B, T = audio.shape[:2]
    regions = visual.reshape(B, T, -1, visual.shape[-1])
    ctx = np.zeros((B, T, visual.shape[-1]))
    w_all = np.zeros((B, T, regions.shape[2]))
    for b in range(B):
        for t in range(T):
            ua = relu(p["U_a.weight"] @ audio[b, t] + p["U_a.bias"])  # (d,)
            wa = p["W_a.weight"] @ ua  # (k,)
            x = np.zeros(regions.shape[2])
            for i, v_i in enumerate(regions[b, t]):
                uv = relu(p["U_v.weight"] @ v_i + p["U_v.bias"])
                x[i] = p["W_f.weight"][0] @ np.tanh(p["W_v.weight"] @ uv + wa)  # eq. 4, column i
            w = np.exp(x - x.max())
            w /= w.sum()  # eq. 3
            w_all[b, t] = w
            ctx[b, t] = w @ regions[b, t]  # eq. 2
    return ctx, w_all


def test_attention_matches_equations() -> None:
    torch.manual_seed(0)
    att = AudioGuidedAttention(audio_dim=6, visual_dim=5, d=8, k=4)
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(2, 3, 6))
    visual = np.abs(rng.normal(size=(2, 3, 2, 2, 5)))
    ctx, w = att(torch.tensor(audio, dtype=torch.float32), torch.tensor(visual, dtype=torch.float32))
    ctx_np, w_np = numpy_attention(att, audio, visual)
    np.testing.assert_allclose(w.detach().numpy(), w_np, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ctx.detach().numpy(), ctx_np, rtol=1e-4, atol=1e-5)


def test_attention_follows_the_audio() -> None:
    """With every region identical except one, only the audio can move the weights; the
    sum of weights is 1 and the context is a convex combination of the region vectors."""
    torch.manual_seed(1)
    att = AudioGuidedAttention(audio_dim=4, visual_dim=3, d=6, k=4)
    visual = torch.rand(1, 2, 4, 3)
    audio = torch.stack([torch.zeros(4), torch.ones(4) * 3]).unsqueeze(0)  # two different seconds
    ctx, w = att(audio, visual)
    assert torch.allclose(w.sum(-1), torch.ones(1, 2))
    lo, hi = visual.min(dim=2).values, visual.max(dim=2).values
    assert (ctx >= lo - 1e-6).all() and (ctx <= hi + 1e-6).all()
    same_visual = torch.rand(1, 1, 4, 3).expand(1, 2, 4, 3)
    _, w2 = att(audio, same_visual)
    assert not torch.allclose(w2[0, 0], w2[0, 1]), "audio must change the attention map"


def test_attention_gradients_match_autograd_of_plain_formula() -> None:
    """The fused GEMM formulation trains like the textbook one (gradients of all parameters)."""
    torch.manual_seed(2)
    att = AudioGuidedAttention(audio_dim=5, visual_dim=7, d=6, k=9)
    audio, visual = torch.rand(2, 3, 5), torch.rand(2, 3, 3, 3, 7)
    ctx, w = att(audio, visual)
    (ctx.square().sum() + w[..., 0].sum()).backward()
    fast = {n: p.grad.clone() for n, p in att.named_parameters()}
    att.zero_grad()
    regions = visual.reshape(2, 3, 9, 7)
    scores = []
    for i in range(9):  # one region at a time
        h = torch.tanh(att.W_v(torch.relu(att.U_v(regions[:, :, i]))) + att.W_a(torch.relu(att.U_a(audio))))
        scores.append(att.W_f(h).squeeze(-1))
    w_ref = torch.softmax(torch.stack(scores, -1), -1)
    ctx_ref = (w_ref.unsqueeze(-1) * regions).sum(2)
    (ctx_ref.square().sum() + w_ref[..., 0].sum()).backward()
    for n, p in att.named_parameters():
        torch.testing.assert_close(fast[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("chunk_rows", [1, 10, 4096])
def test_fused_attention_equals_plain_formulation(monkeypatch, chunk_rows) -> None:
    """The chunked CPU path (hand-written backward) against the whole-batch formulation under
    autograd, in float64: outputs, and the gradients of every parameter, of the audio and of the
    regions, with chunks that do not divide the batch (7 seconds, 2 per chunk at chunk_rows 10)."""
    from avel.models import fused_attention

    monkeypatch.setattr(fused_attention, "CHUNK_ROWS", chunk_rows)
    torch.manual_seed(3)
    att = AudioGuidedAttention(audio_dim=5, visual_dim=6, d=8, k=4).double()
    audio = torch.rand(1, 7, 5, dtype=torch.float64, requires_grad=True)
    visual = torch.rand(1, 7, 2, 2, 6, dtype=torch.float64, requires_grad=True)
    g_ctx, g_w = torch.randn(1, 7, 6, dtype=torch.float64), torch.randn(1, 7, 4, dtype=torch.float64)
    results = []
    for fused in (True, False):
        att.fused = fused
        att.zero_grad()
        audio.grad = visual.grad = None
        ctx, w = att(audio, visual)
        ((ctx * g_ctx).sum() + (w * g_w).sum()).backward()
        grads = {n: p.grad.clone() for n, p in att.named_parameters()}
        results.append((ctx.detach(), w.detach(), grads, audio.grad.clone(), visual.grad.clone()))
        with torch.no_grad():  # the inference path keeps nothing for a backward pass
            ctx_ng, w_ng = att(audio, visual)
        torch.testing.assert_close(ctx_ng, ctx.detach())
        torch.testing.assert_close(w_ng, w.detach())
    (c1, w1, g1, ga1, gv1), (c2, w2, g2, ga2, gv2) = results
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(w1, w2)
    torch.testing.assert_close(ga1, ga2)
    torch.testing.assert_close(gv1, gv2)
    assert g1.keys() == g2.keys()
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], msg=n)


def test_pooled_visual_models_ignore_attention_and_region_order() -> None:
    """V and A+V average the 49 regions: permuting them leaves the output unchanged; V-att's
    attention also depends only on region content, so permuting regions permutes its map."""
    torch.manual_seed(3)
    audio, visual = torch.rand(2, 10, 128), torch.rand(2, 10, 7, 7, 512)
    perm = torch.randperm(49)
    shuffled = visual.reshape(2, 10, 49, 512)[:, :, perm].reshape(2, 10, 7, 7, 512)
    for name in ("V", "A+V"):
        model = create_model(ModelConfig(name=name)).eval()
        with torch.no_grad():
            a, b = model(audio, visual), model(audio, shuffled)
        assert a.attention is None
        torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)
    model = create_model(ModelConfig(name="V-att")).eval()
    with torch.no_grad():
        a, b = model(audio, visual), model(audio, shuffled)
    torch.testing.assert_close(b.attention, a.attention[:, :, perm], rtol=1e-4, atol=1e-6)


def test_single_modality_models_read_only_their_input() -> None:
    torch.manual_seed(4)
    audio, visual = torch.rand(1, 10, 128), torch.rand(1, 10, 7, 7, 512)
    a_model = create_model(ModelConfig(name="A")).eval()
    v_model = create_model(ModelConfig(name="V")).eval()
    with torch.no_grad():
        torch.testing.assert_close(a_model(audio, None).logits, a_model(audio, visual * 0).logits)
        torch.testing.assert_close(v_model(None, visual).logits, v_model(audio * 0, visual).logits)


def test_late_concat_is_the_paper_structure() -> None:
    """A+V-att (late, concat): two BiLSTMs of 128 -> 512-d joint vector -> FC 64 -> FC 29."""
    model = create_model(ModelConfig(name="A+V-att"))
    body = model.body
    assert type(body).__name__ == "LateFusion"
    assert body.temporal_a.lstm.input_size == 128 and body.temporal_v.lstm.input_size == 512
    assert body.temporal_a.lstm.bidirectional and body.temporal_a.lstm.hidden_size == 128
    assert body.head.net[1].in_features == 512 and body.head.net[3].out_features == 29
    uni = create_model(ModelConfig(name="A+V-att", bidirectional=False))
    assert uni.body.head.net[1].in_features == 256


def test_every_stage_builds_its_structure() -> None:
    cfg = ModelConfig(name="A+V-att")
    for stage, cls in FUSION_STAGES.items():
        model = create_model(dataclasses.replace(cfg, fusion_stage=stage))
        assert isinstance(model.body, cls)
    early = create_model(dataclasses.replace(cfg, fusion_stage="early")).body
    assert early.stream.temporal.lstm.input_size == 128 + 512  # one LSTM on [a_t; v_att_t]
    decision = create_model(dataclasses.replace(cfg, fusion_stage="decision")).body
    assert decision.classifier.in_features == 2 * 29  # concat of two score vectors -> 29
    with pytest.raises(AvelError, match="fusion stage"):
        create_model(dataclasses.replace(cfg, fusion_stage="middle"))
    with pytest.raises(AvelError, match="unknown fusion"):
        create_model(dataclasses.replace(cfg, fusion="sum-of-squares"))


def test_dmrn_is_av_att_with_dmrn_fusion() -> None:
    cfg = normalize_config(ModelConfig(name="DMRN"))
    assert (cfg.fusion, cfg.fusion_stage) == ("dmrn", "late")
    torch.manual_seed(0)
    dmrn = create_model(ModelConfig(name="DMRN"))
    torch.manual_seed(0)
    ref = create_model(ModelConfig(name="A+V-att", fusion="dmrn"))
    assert isinstance(dmrn, Localizer)
    assert [k for k in dmrn.state_dict()] == [k for k in ref.state_dict()]
    with pytest.raises(AvelError, match="DMRN fixes fusion"):
        normalize_config(ModelConfig(name="DMRN", fusion="gmu"))
    assert paper_name(ModelConfig(name="DMRN", weak=True)) == "W-DMRN"


def test_losses_by_hand() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # (B=1, T=2, C=3)
    seg = torch.tensor([[[1.0, 0, 0], [0, 0, 1.0]]])
    # supervised CE: mean over seconds of -log softmax at the true class
    lse0, lse1 = np.log(np.exp(2) + 2), np.log(2 + np.e)
    expected = ((lse0 - 2.0) + (lse1 - 0.0)) / 2
    assert LOSSES["ce"](logits, seg, False).item() == pytest.approx(expected, rel=1e-6)
    # weak: eq. 7 averages the per-second scores -> [1, 0.5, 0]; CE against the video label 0
    video = torch.tensor([[1.0, 0, 0]])
    torch.testing.assert_close(mil_pool(logits), torch.tensor([[1.0, 0.5, 0.0]]))
    expected_weak = np.log(np.e + np.exp(0.5) + 1) - 1.0
    assert LOSSES["ce"](logits, video, True).item() == pytest.approx(expected_weak, rel=1e-6)
    # authors: MultiLabelSoftMarginLoss on softmax probabilities
    p = np.exp([1.0, 0.5, 0.0]) / np.exp([1.0, 0.5, 0.0]).sum()
    y = np.array([1.0, 0, 0])
    sig = 1 / (1 + np.exp(-p))
    expected_authors = -np.mean(y * np.log(sig) + (1 - y) * np.log(1 - sig))
    assert LOSSES["authors"](logits, video, True).item() == pytest.approx(expected_authors, rel=1e-5)
