"""PSP: Positive Sample Propagation along the audio-visual event line (Zhou, Zheng, Zhong, Hao, Wang, CVPR 2021).

Structure of the public code (jasongief/PSP_CVPR_2021, fully_model.py / weakly_model.py):

  supervised
    a  = F_a(audio)                        two bias-free Linear layers 128 -> 256 -> 128
    v, alpha = AVGA(a, V)                  the 2018 audio-guided attention as the AVE authors' code
                                           computes it (audio term indexed by region), (B, T, 512), (B, T, 49)
    v  = F_v(v)                            two bias-free Linear layers 512 -> 256 -> 128
    h_a, h_v = BiLSTM_a(a), BiLSTM_v(v)    hidden 128 each -> (B, T, 256)
    PSP (d = 256), every projection bias-free, dropout 0.1 after each ReLU:
      v1, v2, a1, a2 = relu(W(h_v)), relu(W(h_v)), relu(W(h_a)), relu(W(h_a))
      beta = relu(v2 a1^T / sqrt(d))  (B, T, T)        beta_va = rownorm(beta), beta_av = rownorm(beta^T)
      gamma = rownorm(beta_x * [beta_x > tau])          tau = 0.099: prune weak pairs, renormalise
      v' = LN(relu(W_v(h_v + gamma_va a2))),  a' = LN(relu(W_a(h_a + gamma_av v1)))   one LayerNorm for both
      f = (v' + a') / 2
    scores = L2(relu(L1 f))                (B, T, C) per-second logits, the prediction's argmax
    loss = CE(scores per second) + lambda * AVPS, lambda = 100, with
      AVPS = MSE(rownorm(relu(cos(v'_t, a'_t))), y)   y_t = 1/n on the n seconds of the video's
                                                      event class (their get_segment_wise_relation)
  weak (W-PSP): no F_a (the attention and the audio LSTM read the audio features directly);
    F_v is one Linear 512 -> 128 with bias; PSP without W_v, W_a, the dropout after them and the
    renormalisation after pruning (tau = 0.095); then
      s = L2(relu(L1 f)) * sigmoid(relu(w . L2(relu(L1 f))))    (B, T, C), w: Linear(C, 1)
      video score = softmax(mean_t s);  loss = BCE(video score, video label)
    per-second prediction: argmax s.

avel's version keeps the layers and sizes; the parameters their forward never uses are not built
(supervised: linear_v, v_classify, a_classify, L3, L4; weak: temperature, W1, W2). Their AVPS
target array is filled per batch without being cleared, so seconds of an earlier batch's video can
stay set in it; avel computes y afresh for every video. Their weak script trains on a soft video
label file (prob_label.h5) that the AVE release does not include; avel's weak target is the video
label every W- model trains on (the background-only videos labelled background).
`cfg.hidden` (128) is the LSTM width and `cfg.attention_dim` (512) the attention's; further options
in `cfg.extra` (DEFAULTS).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avel.models.blocks import method_options
from avel.models.registry import ModelConfig, ModelOutput, register_model

DEFAULTS: dict[bool, dict[str, float]] = {
    False: {"threshold": 0.099, "avps_weight": 100.0, "dropout": 0.1, "head_hidden": 64},
    True: {"threshold": 0.095, "dropout": 0.1, "head_hidden": 64},
}
# threshold: tau, the pruning threshold on the normalised relations; avps_weight: lambda;
# dropout: after the PSP branch ReLUs; head_hidden: width of L1.
NORM_EPS = 1e-8  # their row normalisation's epsilon
LN_EPS = 1e-6  # their LayerNorm's epsilon

# Their state-dict key prefix -> avel's (None: a parameter their forward never uses, not kept).
KEY_MAP: dict[str, str | None] = {
    "fa.": "audio_fc.",
    "fv.": "visual_fc.",
    "attention.": "attention.",
    "lstm_a_v.lstm_audio.": "lstm_audio.",
    "lstm_a_v.lstm_video.": "lstm_video.",
    "psp.": "psp.",
    "L1.": "L1.",
    "L2.": "L2.",
    "linear_v.": None, "v_classify.": None, "a_classify.": None, "L3.": None, "L4.": None,
}
WEAK_KEY_MAP: dict[str, str | None] = {
    "linear_v.": "visual_fc.",
    "attention.": "attention.",
    "lstm_a_v.lstm_audio.": "lstm_audio.",
    "lstm_a_v.lstm_video.": "lstm_video.",
    "psp.": "psp.",
    "L1.": "L1.",
    "L2.": "L2.",
    "W3.": "W3.",
    "temperature": None, "W1.": None, "W2.": None,
}


class AVGA(nn.Module):
    """The AVE authors' audio-guided attention (avel.models.authors documents the maths), k = g*g regions."""

    def __init__(self, audio_dim: int, visual_dim: int, hidden: int, k: int) -> None:
        super().__init__()
        self.affine_audio = nn.Linear(audio_dim, hidden)
        self.affine_video = nn.Linear(visual_dim, hidden)
        self.affine_v = nn.Linear(hidden, k, bias=False)
        self.affine_g = nn.Linear(hidden, k, bias=False)
        self.affine_h = nn.Linear(k, 1, bias=False)
        for lin in (self.affine_audio, self.affine_video, self.affine_v, self.affine_g, self.affine_h):
            nn.init.xavier_uniform_(lin.weight)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, T, Da), visual (B, T, g, g, Dv) -> attended (B, T, Dv), weights (B, T, k)."""
        B, T = audio.shape[:2]
        V = visual.reshape(B * T, -1, visual.shape[-1])  # (S, k, Dv)
        h_v = F.relu(self.affine_video(V))  # (S, k, d)
        g = self.affine_g(F.relu(self.affine_audio(audio.reshape(B * T, -1))))  # (S, k)
        z = self.affine_h(torch.tanh(self.affine_v(h_v) + g.unsqueeze(2))).squeeze(2)  # (S, k): g[s, i] joins region i
        alpha = torch.softmax(z, dim=-1)  # (S, k)
        return torch.bmm(alpha.unsqueeze(1), V).view(B, T, -1), alpha.view(B, T, -1)


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / (x.sum(-1, keepdim=True) + NORM_EPS)


class PositiveSamplePropagation(nn.Module):
    """The PSP module on the two BiLSTM outputs (B, T, d) -> fused (B, T, d), v', a'."""

    def __init__(self, d: int, threshold: float, dropout: float, weak: bool) -> None:
        super().__init__()
        self.threshold, self.weak = threshold, weak
        self.v_L1, self.v_L2 = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.a_L1, self.a_L2 = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        layers = [self.v_L1, self.v_L2, self.a_L1, self.a_L2]
        if not weak:
            self.v_fc, self.a_fc = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
            layers += [self.v_fc, self.a_fc]
        for lin in layers:
            nn.init.xavier_uniform_(lin.weight)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d, eps=LN_EPS)

    def prune(self, beta: torch.Tensor) -> torch.Tensor:
        """Row-normalised relations with the entries at or below the threshold set to 0 (supervised: renormalised)."""
        beta = row_normalize(beta)
        gamma = beta * (beta > self.threshold).to(beta.dtype)
        return gamma if self.weak else row_normalize(gamma)

    def forward(self, h_a: torch.Tensor, h_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v1, v2 = (self.dropout(F.relu(lin(h_v))) for lin in (self.v_L1, self.v_L2))  # (B, T, d) each
        a1, a2 = (self.dropout(F.relu(lin(h_a))) for lin in (self.a_L1, self.a_L2))
        beta = F.relu(torch.bmm(v2, a1.transpose(1, 2)) / math.sqrt(v2.shape[-1]))  # (B, T_v, T_a)
        gamma_va, gamma_av = self.prune(beta), self.prune(beta.transpose(1, 2))  # (B, T, T)
        v_psp = h_v + torch.bmm(gamma_va, a2)  # (B, T, d): positive audio seconds propagated to video
        a_psp = h_a + torch.bmm(gamma_av, v1)
        if not self.weak:
            v_psp = self.dropout(F.relu(self.v_fc(v_psp)))
            a_psp = self.dropout(F.relu(self.a_fc(a_psp)))
        v_psp, a_psp = self.layer_norm(v_psp), self.layer_norm(a_psp)
        return (v_psp + a_psp) * 0.5, v_psp, a_psp


class PSP(nn.Module):
    """forward(audio (B,T,128), visual (B,T,7,7,512)) -> ModelOutput(logits (B,T,C), attention (B,T,49))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        o = method_options(cfg, DEFAULTS[cfg.weak], reads=("hidden", "attention_dim"))
        self.weak, self.avps_weight = cfg.weak, float(o.get("avps_weight", 0.0))
        Da, Dv, H, C = cfg.audio_dim, cfg.visual_dim, cfg.hidden, cfg.num_classes
        if not cfg.weak:
            self.audio_fc = nn.Sequential(nn.Linear(Da, 2 * H, bias=False), nn.Linear(2 * H, Da, bias=False))
            self.visual_fc = nn.Sequential(nn.Linear(Dv, 2 * H, bias=False), nn.Linear(2 * H, H, bias=False))
        else:
            self.visual_fc = nn.Linear(Dv, H)
        self.attention = AVGA(Da, Dv, cfg.attention_dim, cfg.visual_grid ** 2)
        self.lstm_audio = nn.LSTM(Da, H, batch_first=True, bidirectional=True)
        self.lstm_video = nn.LSTM(H, H, batch_first=True, bidirectional=True)
        self.psp = PositiveSamplePropagation(2 * H, float(o["threshold"]), float(o["dropout"]), cfg.weak)
        hidden = int(o["head_hidden"])
        self.L1, self.L2 = nn.Linear(2 * H, hidden, bias=False), nn.Linear(hidden, C, bias=False)
        nn.init.xavier_uniform_(self.L1.weight)
        nn.init.xavier_uniform_(self.L2.weight)
        if cfg.weak:
            self.W3 = nn.Linear(C, 1, bias=False)  # temporal weighting of the scores

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, **_: torch.Tensor) -> ModelOutput:
        a = audio if self.weak else self.audio_fc(audio)  # (B, T, Da)
        v, alpha = self.attention(a, visual)  # (B, T, Dv), (B, T, 49)
        v = self.visual_fc(v)  # (B, T, H)
        h_a, h_v = self.lstm_audio(a)[0], self.lstm_video(v)[0]  # (B, T, 2H) each, zero initial states
        fused, v_psp, a_psp = self.psp(h_a, h_v)  # (B, T, 2H)
        scores = self.L2(F.relu(self.L1(fused)))  # (B, T, C)
        if self.weak:
            scores = scores * torch.sigmoid(F.relu(self.W3(scores)))  # (B, T, C) weighted per second
            extras = {"video_probs": torch.softmax(scores.mean(dim=1), dim=-1)}  # (B, C)
        else:
            extras = {"similarity": (F.normalize(v_psp, dim=-1) * F.normalize(a_psp, dim=-1)).sum(-1)}  # (B, T) cosine
        return ModelOutput(logits=scores, attention=alpha, extras=extras)

    def method_loss(self, out: ModelOutput, target: torch.Tensor, weak: bool) -> torch.Tensor:
        """Supervised: per-second CE + lambda * AVPS; weak: BCE of the softmax video score."""
        if weak:
            return F.binary_cross_entropy(out.extras["video_probs"].float().clamp(0.0, 1.0), target.float())
        C = target.shape[-1]
        ce = F.cross_entropy(out.logits.float().reshape(-1, C), target.reshape(-1, C).argmax(-1))
        return ce + self.avps_weight * avps_loss(out.extras["similarity"].float(), avps_target(target))


def avps_target(target: torch.Tensor) -> torch.Tensor:
    """(B, T, C) one-hot per second -> (B, T): 1/n on the n seconds of the video's class, 0 elsewhere.

    The video's class is the lowest class present in any second: its event class, or background
    for a background-only video (their get_segment_wise_relation)."""
    present = target.amax(dim=1) > 0  # (B, C)
    cls = present.float().argmax(-1)  # (B,) first present class
    on = target.gather(-1, cls.view(-1, 1, 1).expand(-1, target.shape[1], 1)).squeeze(-1)  # (B, T)
    return on / on.sum(-1, keepdim=True).clamp_min(1.0)


def avps_loss(similarity: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eqs. 8-9: MSE between the row-normalised relu(cosine similarity) (B, T) and the AVPS target."""
    return F.mse_loss(row_normalize(F.relu(similarity)), target)


@register_model("PSP", inputs=("audio", "visual"),
                description="Positive Sample Propagation (Zhou et al., CVPR 2021); W-PSP with --weak")
def psp(cfg: ModelConfig) -> nn.Module:
    """PSP (supervised; `cfg.weak`: the weakly-supervised network of their weakly_model.py)."""
    return PSP(cfg)
