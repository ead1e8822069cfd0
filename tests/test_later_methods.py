"""CMRAN, PSP and CMBS (supervised and W-): forward passes against NumPy, their losses, the key maps,
the trainer's method_loss hook, training and evaluation from the CLI, attention pictures.

The NumPy reference below is written from the methods' equations in the structure of their public
code and reads the weights under *their* state-dict names (avel's weights renamed through the
inverse of each module's KEY_MAP), so a wrong entry in a key map shows as a wrong forward pass. It
calls nothing in avel.models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from authors_files import np_bilstm

from avel.errors import AvelError
from avel.models import cmbs as cmbs_mod
from avel.models import cmran as cmran_mod
from avel.models import psp as psp_mod
from avel.foreign import families
from avel.models.blocks import gated_logits
from avel.models.registry import ModelConfig, create_model

pytestmark = pytest.mark.usefixtures("one_thread")
B, T, C = 2, 10, 29
VARIANTS = [(name, weak) for name in ("CMRAN", "PSP", "CMBS") for weak in (False, True)]
IDS = [("W-" if weak else "") + name for name, weak in VARIANTS]


# ---- NumPy reference -----------------------------------------------------------------------------

def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def relu(x):
    return np.maximum(x, 0.0)


def lin(w, name, x):
    y = x @ w[f"{name}.weight"].T
    return y + w[f"{name}.bias"] if f"{name}.bias" in w else y


def layer_norm(w, name, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]


def mha(w, name, q, k, v, heads):
    """Multi-head attention (in_proj / out_proj as torch names them), batch-first (B, L, d)."""
    d = q.shape[-1]
    W, b = w[f"{name}.in_proj_weight"], w[f"{name}.in_proj_bias"]
    dh = d // heads

    def split(x, i):
        y = x @ W[i * d:(i + 1) * d].T + b[i * d:(i + 1) * d]
        return y.reshape(y.shape[0], y.shape[1], heads, dh).transpose(0, 2, 1, 3)  # (B, h, L, dh)

    Q, K, V = split(q, 0), split(k, 1), split(v, 2)
    att = softmax(Q @ K.transpose(0, 1, 3, 2) / np.sqrt(dh))  # (B, h, Lq, Lk)
    out = (att @ V).transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], d)
    return lin(w, f"{name}.out_proj", out)


def ffn(w, name, x):
    return lin(w, f"{name}.linear2", relu(lin(w, f"{name}.linear1", x)))


def encoder(w, name, x, heads=4, layers=2):
    """Their InternalTemporalRelationModule: affine_matrix, then post-norm self-attention layers."""
    x = lin(w, f"{name}.affine_matrix", x)
    for i in range(layers):
        L = f"{name}.encoder.layers.{i}"
        x = layer_norm(w, f"{L}.norm1", x + mha(w, f"{L}.self_attn", x, x, x, heads))
        x = layer_norm(w, f"{L}.norm2", x + ffn(w, L, x))
    return x


def decoder(w, name, q, memory, heads=4, layers=1):
    """Their CrossModalRelationAttModule: the query attends over [memory; query]."""
    q = lin(w, f"{name}.affine_matrix", q)
    for i in range(layers):
        L = f"{name}.decoder.layers.{i}"
        m = np.concatenate([memory, q], axis=1)
        q = layer_norm(w, f"{L}.norm1", q + mha(w, f"{L}.multihead_attn", q, m, m, heads))
        q = layer_norm(w, f"{L}.norm2", q + ffn(w, L, q))
    return q


def interaction(w, name, v, a, heads):
    g = v * a
    m = np.concatenate([a, v], axis=1)
    return layer_norm(w, f"{name}.norm1", g + mha(w, f"{name}.video_multihead", g, m, m, heads))


def channel_spatial(w, V, a, V_query):
    """Their New_Audio_Guided_Attention (CMRAN): V (S, k, Dv) weighted, V_query feeds the channel weights."""
    p = "spatial_channel_att"
    u = (relu(lin(w, f"{p}.affine_audio_1", a))[:, None] * relu(lin(w, f"{p}.affine_video_1", V_query))).mean(1)
    c = sig(lin(w, f"{p}.affine_v_c_att", relu(lin(w, f"{p}.affine_bottleneck", u))))
    Vc = V * (c[:, None] + 1)
    q = relu(lin(w, f"{p}.affine_video_2", Vc)) * relu(lin(w, f"{p}.affine_audio_2", a))[:, None]
    alpha = softmax(np.tanh(lin(w, f"{p}.affine_v_s_att", q))[..., 0])  # (S, k)
    return np.einsum("sk,skd->sd", alpha, Vc), alpha


def top4(x):
    """(B, T, K) -> (B, K): mean of the 4 largest values over time."""
    return np.sort(x, axis=1)[:, ::-1][:, :4].mean(1)


def np_cmran(w, audio, visual, weak):
    Bn, Tn = audio.shape[:2]
    v = relu(lin(w, "v_fc", visual)).reshape(Bn * Tn, -1, 512)
    v_att, alpha = channel_spatial(w, v, audio.reshape(Bn * Tn, -1), v)
    v_att = v_att.reshape(Bn, Tn, -1)
    a_q = decoder(w, "audio_decoder", audio, encoder(w, "video_encoder", v_att))
    v_q = decoder(w, "video_decoder", v_att, encoder(w, "audio_encoder", audio))
    h = interaction(w, "AVInter", v_q, a_q, 2 if weak else 4)
    rel = lin(w, "localize_module.classifier", h)[..., 0]  # (B, T)
    cls = lin(w, "localize_module.event_classifier", h.max(1))  # (B, 28 | 29)
    out = {"relevance": rel, "class_scores": cls, "attention": alpha.reshape(Bn, Tn, -1)}
    if weak:
        out["video_probs"] = softmax((sig(rel)[..., None] * cls[:, None]).max(1))
    return out


def np_avga(w, a, visual):
    Bn, Tn = a.shape[:2]
    V = visual.reshape(Bn * Tn, -1, visual.shape[-1])
    h_v = relu(lin(w, "attention.affine_video", V))
    g = lin(w, "attention.affine_g", relu(lin(w, "attention.affine_audio", a.reshape(Bn * Tn, -1))))
    z = lin(w, "attention.affine_h", np.tanh(lin(w, "attention.affine_v", h_v) + g[:, :, None]))[..., 0]
    alpha = softmax(z)
    return np.einsum("sk,skd->sd", alpha, V).reshape(Bn, Tn, -1), alpha.reshape(Bn, Tn, -1)


def np_psp(w, audio, visual, weak):
    a = audio if weak else lin(w, "fa.1", lin(w, "fa.0", audio))
    v_att, alpha = np_avga(w, a, visual)
    v = lin(w, "linear_v", v_att) if weak else lin(w, "fv.1", lin(w, "fv.0", v_att))
    h_a, h_v = np_bilstm(w, "lstm_a_v.lstm_audio", a), np_bilstm(w, "lstm_a_v.lstm_video", v)
    v1, v2 = relu(lin(w, "psp.v_L1", h_v)), relu(lin(w, "psp.v_L2", h_v))
    a1, a2 = relu(lin(w, "psp.a_L1", h_a)), relu(lin(w, "psp.a_L2", h_a))
    beta = relu(v2 @ a1.transpose(0, 2, 1) / np.sqrt(v2.shape[-1]))
    thr = 0.095 if weak else 0.099

    def prune(b):
        b = b / (b.sum(-1, keepdims=True) + 1e-8)
        g = b * (b > thr)
        return g if weak else g / (g.sum(-1, keepdims=True) + 1e-8)

    v_psp = h_v + prune(beta) @ a2
    a_psp = h_a + prune(beta.transpose(0, 2, 1)) @ v1
    if not weak:
        v_psp, a_psp = relu(lin(w, "psp.v_fc", v_psp)), relu(lin(w, "psp.a_fc", a_psp))
    v_psp, a_psp = layer_norm(w, "psp.layer_norm", v_psp, 1e-6), layer_norm(w, "psp.layer_norm", a_psp, 1e-6)
    score = lin(w, "L2", relu(lin(w, "L1", (v_psp + a_psp) / 2)))
    out = {"logits": score, "attention": alpha}
    if weak:
        score = score * sig(relu(lin(w, "W3", score)))
        out.update(logits=score, video_probs=softmax(score.mean(1)))
    else:
        nv = v_psp / np.linalg.norm(v_psp, axis=-1, keepdims=True)
        na = a_psp / np.linalg.norm(a_psp, axis=-1, keepdims=True)
        out["similarity"] = (nv * na).sum(-1)
    return out


def np_cmbs_attention(w, visual, audio, beta):
    Bn, Tn = audio.shape[:2]
    p = "spatial_channel_att"
    V = relu(lin(w, "v_fc", visual)).reshape(Bn * Tn, -1, 512)
    a = audio.reshape(Bn * Tn, -1)
    energy = lin(w, f"{p}.video_query", V) @ lin(w, f"{p}.video_key", V).transpose(0, 2, 1)
    V_s = layer_norm(w, f"{p}.norm", V + softmax(energy) @ lin(w, f"{p}.video_value", V))
    avg = relu(lin(w, f"{p}.affine_video_ave", V_s.sum(1) / V_s.shape[1]))
    q = relu(lin(w, f"{p}.affine_video_3", V_s)) * avg[:, None]
    m = np.einsum("sk,skd->sd", softmax(np.tanh(lin(w, f"{p}.ave_v_att", q))[..., 0]), V_s)
    c, alpha = channel_spatial(w, V, a, V_s)
    return (c + beta * sig(m) * c).reshape(Bn, Tn, -1), alpha.reshape(Bn, Tn, -1)


def np_cmbs(w, audio, visual, weak):
    o = cmbs_mod.DEFAULTS[weak]
    al, ga = o["alpha"], o["gamma"]
    v, alpha = np_cmbs_attention(w, visual, audio, o["beta"])
    a = audio
    if not weak:
        a, v = np_bilstm(w, "audio_visual_rnn_layer.audio_rnn", a), np_bilstm(w, "audio_visual_rnn_layer.visual_rnn", v)
    k_v, k_a = encoder(w, "video_encoder", v), encoder(w, "audio_encoder", a)
    q_a, q_v = decoder(w, "audio_decoder", a, k_v), decoder(w, "video_decoder", v, k_a)
    heads = 2 if weak else 4
    if weak:
        g_a, g_v = sig(lin(w, "audio_gated.0", k_v)), sig(lin(w, "video_gated.0", k_a))
        q_v = (1 - al) * q_v + g_a * q_v * al
        q_a = (1 - al) * q_a + g_v * q_a * al
        G_v, G_a = sig(lin(w, "video_cas", q_v)), sig(lin(w, "audio_cas", q_a))
    else:
        g_a, g_v = sig(lin(w, "audio_gated.0", k_a)), sig(lin(w, "video_gated.0", k_v))
        q_v = q_v + g_a * q_v * al
        q_a = q_a + g_v * q_a * al
        s_av = (top4(lin(w, "video_cas", q_v)) + top4(lin(w, "audio_cas", q_a))) / 2
    q_v = interaction(w, "AVInter", q_v, q_a, heads)
    q_a = interaction(w, "VAInter", q_a, q_v, heads)
    h = (q_v + q_a) / 2
    if weak:
        cas = h @ w["CAS_model.classifier.0.weight"][..., 0].T  # Conv1d, kernel 1, no bias
        cas = ga * G_v * cas + ga * G_a * cas
        raw = top4(cas)
        gate = ((g_a + g_v) / 2)[..., 0]
        return {"relevance": gate, "class_scores": raw, "video_probs": softmax((gate[..., None] * raw[:, None]).max(1)),
                "attention": alpha}
    return {"relevance": lin(w, "localize_module.classifier", h)[..., 0],
            "class_scores": lin(w, "localize_module.event_classifier", h.max(1)) + ga * s_av,
            "gate": (g_a * g_v)[..., 0], "av_scores": s_av, "attention": alpha}


def np_gated(rel, cls):
    """Per-second scores from the rule of gated_logits' docstring (log-sigmoid written out)."""
    log_p, log_not = np.log(sig(rel)), np.log(sig(-rel))
    q = cls - cls.max(-1, keepdims=True)
    events = log_p[..., None] + q[:, None, :C - 1]
    bg = log_not if cls.shape[-1] == C - 1 else np.maximum(log_not, log_p + q[:, None, C - 1])
    return np.concatenate([events, bg[..., None]], -1)


def their_rule(rel, cls):
    """Their compute_accuracy_supervised: argmax of the class scores where sigmoid(r) > 0.5, else 28."""
    return np.where(sig(rel) > 0.5, cls.argmax(-1)[:, None], C - 1)


REFERENCE = {"CMRAN": (np_cmran, cmran_mod), "PSP": (np_psp, psp_mod), "CMBS": (np_cmbs, cmbs_mod)}


def key_map(module, weak: bool) -> dict:
    return getattr(module, "WEAK_KEY_MAP", module.KEY_MAP) if weak else module.KEY_MAP


def their_weights(model: torch.nn.Module, table: dict) -> dict[str, np.ndarray]:
    """avel's state dict under their names: the inverse of `table` (longest avel prefix)."""
    inverse = {ours: theirs for theirs, ours in table.items() if ours is not None}
    out = {}
    for key, value in model.state_dict().items():
        prefix = max((p for p in inverse if key.startswith(p)), key=len)
        out[inverse[prefix] + key[len(prefix):]] = value.double().numpy()
    return out


def build(name: str, weak: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(ModelConfig(name=name, weak=weak)).eval()


def inputs(seed: int, Tn: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, Tn, 128, generator=g), torch.rand(B, Tn, 7, 7, 512, generator=g)


# ---- forward passes ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "weak"), VARIANTS, ids=IDS)
def test_forward_matches_numpy(name: str, weak: bool) -> None:
    ref_fn, module = REFERENCE[name]
    model = build(name, weak)
    audio, visual = inputs(1)
    if hasattr(model, "relevance"):  # centre the relevance so that some seconds fall on each side of 0.5
        with torch.no_grad():
            model.relevance.bias -= model(audio, visual).extras["relevance"].quantile(0.5)  # between two seconds
    w = their_weights(model, key_map(module, weak))
    with torch.no_grad():
        out = model(audio, visual)
    ref = ref_fn(w, audio.double().numpy(), visual.double().numpy(), weak)
    np.testing.assert_allclose(out.attention.numpy(), ref.pop("attention"), atol=1e-5)
    if name == "PSP":
        np.testing.assert_allclose(out.logits.numpy(), ref.pop("logits"), atol=1e-5, rtol=1e-5)
    else:
        expected = np_gated(ref["relevance"], ref["class_scores"])
        np.testing.assert_allclose(out.logits.numpy(), expected, atol=1e-5, rtol=1e-5)
        assert (out.logits.argmax(-1).numpy() == their_rule(ref["relevance"], ref["class_scores"])).all()
    for key, value in ref.items():
        np.testing.assert_allclose(out.extras[key].numpy(), value, atol=1e-5, rtol=1e-5, err_msg=key)
    if name == "CMBS" and weak:  # their gate is a probability thresholded again through a sigmoid: always "event"
        assert (out.logits.argmax(-1) == torch.from_numpy(ref["class_scores"].argmax(-1))[:, None]).all()
    elif name != "PSP":
        pred = out.logits.argmax(-1)
        assert (pred == C - 1).any() and (pred != C - 1).any()  # both sides of the rule are exercised


@pytest.mark.parametrize(("name", "weak"), VARIANTS, ids=IDS)
def test_key_map_accounts_for_every_parameter(name: str, weak: bool) -> None:
    """Their names -> avel's through the table reproduces avel's state dict exactly."""
    model = build(name, weak)
    table = key_map(REFERENCE[name][1], weak)
    theirs = {k: torch.from_numpy(v) for k, v in their_weights(model, table).items()}
    family = families()[f"W-{name}" if weak else name]  # the importer's table holds the same key map
    assert dict(family.key_map) == dict(table)
    back = {family.to_avel(k): v for k, v in theirs.items()}
    assert set(back) == set(model.state_dict())
    fresh = build(name, weak, seed=1)
    fresh.load_state_dict(back, strict=True)
    audio, visual = inputs(2)
    with torch.no_grad():
        assert torch.equal(fresh(audio, visual).logits, model(audio, visual).logits)


def test_key_maps_drop_what_their_forward_never_uses() -> None:
    cmran, psp, cmbs = (families()[n] for n in ("CMRAN", "PSP", "CMBS"))
    for unused in ("spatial_channel_att.affine_video_guided_1.weight",
                   "audio_decoder.decoder.layers.0.self_attn.in_proj_weight", "video_encoder.encoder_layer.linear1.weight"):
        assert cmran.to_avel(unused) is None
    assert psp.to_avel("L3.weight") is None
    assert cmbs.to_avel("mystery.weight") == "mystery.weight"  # kept, so that the importer names it as unexpected


@pytest.mark.parametrize(("name", "weak"), VARIANTS, ids=IDS)
def test_any_length_and_backward(name: str, weak: bool) -> None:
    """`avel localize` runs on videos of any length; the weak networks train (every parameter a gradient)."""
    model = build(name, weak).train()
    audio, visual = inputs(3, Tn=3)  # shorter than CMBS's top-4 pooling
    out = model(audio, visual)
    assert out.logits.shape == (B, 3, C) and out.attention.shape == (B, 3, 49)
    target = torch.eye(C)[torch.tensor([1, 28])] if weak else torch.eye(C)[torch.tensor([[1, 1, 28], [28, 5, 5]])]
    model.method_loss(out, target, weak).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---- prediction rule and losses by hand ------------------------------------------------------------

def test_gated_logits_by_hand() -> None:
    rel = torch.tensor([[2.0, -1.0, 0.3]])
    scores = torch.tensor([[0.1, 3.0, -2.0]])  # C = 4: three events + background
    logits = gated_logits(rel, scores, 4)
    assert logits.argmax(-1).tolist() == [[1, 3, 1]]
    p = torch.sigmoid(rel)
    torch.testing.assert_close(logits[0, 0], torch.stack([p[0, 0].log() - 2.9, p[0, 0].log(), p[0, 0].log() - 5.0,
                                                          (1 - p[0, 0]).log()]))
    with_bg = gated_logits(rel, torch.tensor([[0.1, 3.0, -2.0, 5.0]]), 4)  # background is the top class score
    assert with_bg.argmax(-1).tolist() == [[3, 3, 3]]


def np_bce_logits(x, y):
    return float(np.mean(-(y * np.log(sig(x)) + (1 - y) * np.log(sig(-x)))))


def np_ce(scores, y):
    logp = scores - scores.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def labels() -> torch.Tensor:
    """Two videos: class 3 on seconds 2-6, class 10 on seconds 0-3; background elsewhere."""
    lab = torch.full((B, T), C - 1)
    lab[0, 2:7], lab[1, 0:4] = 3, 10
    return torch.eye(C)[lab]


@pytest.mark.parametrize(("name", "weak"), VARIANTS, ids=IDS)
def test_method_loss_by_hand(name: str, weak: bool) -> None:
    model = build(name, weak)
    audio, visual = inputs(4)
    with torch.no_grad():
        out = model(audio, visual)
    x = {k: v.double().numpy() for k, v in out.extras.items()}
    per_second = labels()
    video = per_second.amax(1) if not weak else torch.eye(C)[torch.tensor([3, 10])]
    target = video if weak else per_second
    e = (per_second[..., :-1].sum(-1) > 0).double().numpy()  # event seconds
    y = np.array([3, 10])
    if weak and name == "PSP":  # BCE of the softmax video score
        p, t = x["video_probs"], target.numpy()
        expected = float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))
    elif weak:  # MultiLabelSoftMarginLoss of the softmax video score
        expected = np_bce_logits(x["video_probs"], target.numpy())
    elif name == "PSP":
        logits = out.logits.double().numpy().reshape(-1, C)
        ce = np_ce(logits, per_second.argmax(-1).reshape(-1).numpy())
        avps = np.array([[0, 0, .2, .2, .2, .2, .2, 0, 0, 0], [.25] * 4 + [0] * 6])  # 1/n on the class's seconds
        torch.testing.assert_close(psp_mod.avps_target(per_second).double(), torch.from_numpy(avps))
        sim = relu(x["similarity"])
        expected = ce + 100.0 * float(np.mean((sim / (sim.sum(-1, keepdims=True) + 1e-8) - avps) ** 2))
    else:
        expected = np_bce_logits(x["relevance"], e) + np_ce(x["class_scores"], y)
        if name == "CMBS":
            expected += np_bce_logits(x["gate"], e) + np_ce(x["av_scores"], y)
    assert float(model.method_loss(out, target, weak)) == pytest.approx(expected, rel=1e-5)


def test_avps_target_of_a_background_only_video() -> None:
    """Their get_segment_wise_relation takes the lowest class present: background for such a video."""
    target = torch.eye(C)[torch.full((1, T), C - 1)]
    torch.testing.assert_close(psp_mod.avps_target(target), torch.full((1, T), 0.1))


# ---- options ---------------------------------------------------------------------------------------

def test_options_and_refusals() -> None:
    assert create_model(ModelConfig(name="CMRAN", extra={"d_model": 64, "feedforward": 32})).relevance.in_features == 64
    assert create_model(ModelConfig(name="PSP", hidden=16)).L1.in_features == 32  # BiLSTM width 2 x 16
    with pytest.raises(AvelError, match="CMRAN has no option depth"):
        create_model(ModelConfig(name="CMRAN", extra={"depth": 3}))
    with pytest.raises(AvelError, match="CMBS does not take fusion='dmrn'"):
        create_model(ModelConfig(name="CMBS", fusion="dmrn"))
    with pytest.raises(AvelError, match="PSP does not take bidirectional=False"):
        create_model(ModelConfig(name="PSP", bidirectional=False))
    assert cmran_mod.DEFAULTS[True]["inter_heads"] == 2 and cmran_mod.DEFAULTS[False]["inter_heads"] == 4


# ---- training through the hook, the CLI, evaluation, pictures -------------------------------------

def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from avel.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_trainer_uses_the_models_own_loss(tiny_synth, tmp_path, monkeypatch) -> None:
    from avel.data.dataset import AVEDataset
    from avel.train import trainer as trainer_mod
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    seen, real = [], psp_mod.PSP.method_loss

    def spy(self, out, target, weak):
        seen.append((tuple(target.shape), weak, torch.is_grad_enabled()))
        return real(self, out, target, weak)

    monkeypatch.setattr(psp_mod.PSP, "method_loss", spy)
    monkeypatch.setitem(trainer_mod.LOSSES, "ce", lambda *a: pytest.fail("TrainConfig.loss used for PSP"))
    ds = AVEDataset.open(tiny_synth, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=32, num_threads=1, precision="fp32", seed=0)
    results = train(ds, ModelConfig(name="PSP", weak=True), cfg, tmp_path / "w", progress=False)
    assert results["model"] == "W-PSP" and results["noisy_videos"] > 0
    assert {s[1] for s in seen} == {True} and all(len(s[0]) == 2 for s in seen)  # video-level targets
    assert any(s[2] for s in seen) and any(not s[2] for s in seen)  # training steps and validation
    with pytest.raises(AvelError, match="PSP trains with its own loss"):
        train(ds, ModelConfig(name="PSP"), TrainConfig(loss="authors", epochs=1), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv", [["CMRAN"], ["PSP"], ["CMBS"], ["CMRAN", "--weak"]],
                         ids=["CMRAN", "PSP", "CMBS", "W-CMRAN"])
def test_cli_train_then_evaluate(tiny_synth, tmp_path, capsys, argv: list[str]) -> None:
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(["train", "--data", str(tiny_synth), "--model", *argv, "--out", str(out), "--epochs", "1",
                             "--batch-size", "32", "--threads", "1", "--quiet", "--precision", "fp32"], capsys)
    name = ("W-" if "--weak" in argv else "") + argv[0]
    assert rc == 0 and stdout.startswith(f"{name}: selected epoch 1")
    results = json.loads((out / "results.json").read_text())
    rc, stdout, _ = run_cli(["evaluate", str(out), "--json", "--precision", "fp32"], capsys)
    assert rc == 0
    evaluated = json.loads(stdout)
    assert evaluated["model"] == name and evaluated["accuracy"] == results["test"]["accuracy"]
    assert evaluated["attention_chance_rate"] == pytest.approx(100 / 49, abs=1e-3)  # the attention is scored


def test_cli_refuses_the_authors_recipe_loss(tiny_synth, tmp_path, capsys) -> None:
    rc, _, err = run_cli(["train", "--data", str(tiny_synth), "--model", "CMBS", "--out", str(tmp_path / "r"),
                          "--recipe", "authors", "--quiet"], capsys)
    assert rc != 0 and err.count("\n") == 1 and "CMBS trains with its own loss" in err


@pytest.fixture(scope="module")
def localize_setup(tmp_path_factory):
    from avel.features.render import ClipSpec, render_clip
    from avel.features.weights import random_weight_files

    root = tmp_path_factory.mktemp("later-localize")
    weights = random_weight_files(root / "weights")
    clip = render_clip(root / "clip.mp4", ClipSpec(seed=1, seconds=3, fps=10, width=64, height=48, shape_seconds={1},
                                                   tone_seconds={1}, colour=(230, 40, 40), shape="square",
                                                   tone_hz=440.0))
    return weights, clip


def random_run(root: Path, weights: dict, cfg: ModelConfig) -> Path:
    """A run directory holding an untrained model, recorded with the tests' extractor (1x1 maps)."""
    import avel
    from avel.data.catalog import AVE_CATEGORIES
    from avel.features.extractor import ExtractorConfig, FeatureExtractor
    from avel.io import write_json
    from avel.train.checkpoint import CONFIG_FILE, RUN_FORMAT, save_model
    from avel.train.config import TrainConfig

    root.mkdir(parents=True)
    torch.manual_seed(0)
    info = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19_keras"]),
                                            vggish_weights=str(weights["vggish"]), frames_per_second=1,
                                            image_size=32)).info
    write_json(root / CONFIG_FILE, {"format": RUN_FORMAT, "avel_version": avel.__version__, "model": cfg.to_dict(),
                                    "train": TrainConfig().to_dict(),
                                    "data": {"root": None, "synthetic": False, "extractor": info,
                                             "categories": list(AVE_CATEGORIES)}})
    save_model(root, create_model(cfg), cfg, {})
    return root


@pytest.mark.parametrize("name", ["CMRAN", "PSP", "CMBS"])
def test_localize_draws_attention_pictures(localize_setup, tmp_path, capsys, name: str) -> None:
    weights, clip = localize_setup
    run = random_run(tmp_path / "run", weights, ModelConfig(name=name, visual_grid=1))
    out = tmp_path / "out"
    rc, _, _ = run_cli(["localize", str(clip), "--model", str(run), "--out", str(out), "--vgg19-weights",
                        str(weights["vgg19_keras"]), "--vggish-weights", str(weights["vggish"]),
                        "--frames-per-second", "1", "--image-size", "32", "--precision", "fp32", "--quiet"], capsys)
    assert rc == 0
    events = json.loads((out / "events.json").read_text())
    assert events["model"]["has_attention"] is True and len(events["attention"]["peak_to_mean"]) == 3
    assert sorted(p.name for p in (out / "attention").iterdir()) == [f"second_{t:03d}.png" for t in range(3)]
    assert (out / "attention.gif").is_file()
    page = (out / "index.html").read_text()
    assert "no spatial attention" not in page and "Attention is flat in every second" in page  # a 1x1 map
