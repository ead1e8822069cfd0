"""Building blocks shared by the later methods on AVE features (CMRAN, PSP, CMBS).

- `method_options`: a method's options from `cfg.extra` over its documented defaults; generic
  ModelConfig fields the method does not read are refused rather than silently ignored.
- `gated_logits`: per-second scores for methods that predict with an event-relevance score per
  second and one class score per video: the per-second argmax is "the video's top class where
  sigmoid(relevance) > 0.5, else background", the test rule of CMRAN's, PSP's and CMBS's code.
- `RelationEncoder` / `RelationDecoder`: the transformer-style temporal relation blocks of CMRAN
  (also used by CMBS): an input projection, then post-norm layers of multi-head attention and a
  ReLU feed-forward network, each with a residual connection and LayerNorm.
- `AudioVisualInteraction`: CMRAN's audio-video interaction: q = v * a attends over [a; v].
- `SpatialChannelAttention`: CMRAN's audio-guided channel then spatial attention over the
  visual grid (CMBS extends it).

All blocks take batch-first tensors (B, T, D); nn.MultiheadAttention keeps torch's parameter names
(in_proj_weight, out_proj), so a sequence-first checkpoint loads unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avel.errors import AvelError
from avel.models.registry import ModelConfig

# ModelConfig fields every later method reads; any other field must keep its default.
SHARED_FIELDS = ("name", "num_classes", "audio_dim", "visual_dim", "visual_grid", "weak", "extra")


def method_options(cfg: ModelConfig, defaults: Mapping[str, Any], reads: tuple[str, ...] = ()) -> dict[str, Any]:
    """`defaults` updated by `cfg.extra`; unknown extra keys and non-default unread fields are refused.

    `reads`: ModelConfig fields beyond SHARED_FIELDS that the method uses (e.g. PSP's `hidden`).
    """
    unknown = sorted(set(cfg.extra) - set(defaults))
    if unknown:
        raise AvelError(f"{cfg.name} has no option {', '.join(unknown)} (its options: {', '.join(defaults)})")
    base = ModelConfig()
    fixed = [f for f in base.to_dict() if f not in SHARED_FIELDS and f not in reads]
    bad = [f"{f}={getattr(cfg, f)!r}" for f in fixed if getattr(cfg, f) != getattr(base, f)]
    if bad:
        raise AvelError(f"{cfg.name} does not take {', '.join(bad)}; its own options go in the model config's "
                        f"`extra` ({', '.join(defaults)})")
    return {**defaults, **cfg.extra}


def gated_logits(relevance: torch.Tensor, class_scores: torch.Tensor, num_classes: int) -> torch.Tensor:
    """relevance (B, T) logits, class_scores (B, K) with K = C-1 (events) or C (with background) -> (B, T, C).

    Per second t with p_t = sigmoid(relevance_t) and s the video's class scores:
        L[t, c]  = log p_t + s_c - max(s)               c an event class (c < C-1)
        L[t, bg] = log(1 - p_t)                          K = C-1
        L[t, bg] = max(log(1 - p_t), log p_t + s_bg - max(s))   K = C
    so argmax_c L[t] is argmax(s) where p_t > 0.5 and background otherwise (their rule; a tie at
    p_t = 0.5 exactly goes to the class instead of background). softmax(L) is a distribution with
    that argmax; its values are not probabilities the method itself computes.
    """
    B, T = relevance.shape
    C = num_classes
    K = class_scores.shape[-1]
    if K not in (C - 1, C):
        raise ValueError(f"class scores have {K} classes; expected {C - 1} or {C}")
    log_p = F.logsigmoid(relevance).unsqueeze(-1)  # (B, T, 1)
    log_not = F.logsigmoid(-relevance)  # (B, T)
    rel = (class_scores - class_scores.amax(-1, keepdim=True)).unsqueeze(1)  # (B, 1, K), top class 0
    events = log_p + rel[..., :C - 1]  # (B, T, C-1)
    bg = log_not if K == C - 1 else torch.maximum(log_not, log_p[..., 0] + rel[..., C - 1])  # (B, T)
    return torch.cat([events, bg.unsqueeze(-1)], dim=-1)  # (B, T, C)


def top_k_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the k largest values over time: (B, T, K) -> (B, K) (all T values when T < k)."""
    return x.topk(min(k, x.shape[1]), dim=1).values.mean(dim=1)


def _feedforward_parts(layer: nn.Module, d_model: int, hidden: int, dropout: float) -> None:
    """The FFN and the residual LayerNorms of a layer, under torch's TransformerEncoderLayer names."""
    layer.linear1, layer.linear2 = nn.Linear(d_model, hidden), nn.Linear(hidden, d_model)
    layer.dropout = nn.Dropout(dropout)
    layer.norm1, layer.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
    layer.dropout1, layer.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)


def _feedforward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer.linear2(layer.dropout(F.relu(layer.linear1(x))))  # (B, T, d)


class EncoderLayer(nn.Module):
    """x = LN1(x + MHA(x, x, x)); x = LN2(x + FFN(x)) (post-norm, dropout on both residual branches)."""

    def __init__(self, d_model: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        _feedforward_parts(self, d_model, feedforward, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, need_weights=False)[0]))  # (B, T, d)
        return self.norm2(x + self.dropout2(_feedforward(self, x)))


class DecoderLayer(nn.Module):
    """Cross-modal relation attention: the query attends over [memory; query] (2T steps), then the FFN.

        m = [memory; q];  q = LN1(q + MHA(q, m, m));  q = LN2(q + FFN(q))
    """

    def __init__(self, d_model: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        _feedforward_parts(self, d_model, feedforward, dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        m = torch.cat([memory, q], dim=1)  # (B, 2T, d)
        q = self.norm1(q + self.dropout1(self.cross_attn(q, m, m, need_weights=False)[0]))  # (B, T, d)
        return self.norm2(q + self.dropout2(_feedforward(self, q)))


class RelationEncoder(nn.Module):
    """Internal temporal relation: Linear(in, d) then `layers` EncoderLayers. (B, T, in) -> (B, T, d)."""

    def __init__(self, in_dim: int, d_model: int, heads: int, feedforward: int, dropout: float, layers: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, d_model)
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, feedforward, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, T, d)
        for layer in self.layers:
            x = layer(x)
        return x


class RelationDecoder(nn.Module):
    """Cross-modal relation: Linear(in, d) on the query, then `layers` DecoderLayers over `memory` (B, T, d)."""

    def __init__(self, in_dim: int, d_model: int, heads: int, feedforward: int, dropout: float, layers: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, d_model)
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, feedforward, dropout) for _ in range(layers))

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = self.proj(query)  # (B, T, d)
        for layer in self.layers:
            q = layer(q, memory)
        return q


class AudioVisualInteraction(nn.Module):
    """g = v * a;  out = LN(g + dropout(MHA(g, [a; v], [a; v]))). (B, T, d) x 2 -> (B, T, d)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(0.1)  # the residual-branch dropout is fixed at 0.1 in CMRAN's and CMBS's code
        self.norm = nn.LayerNorm(d_model)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        g = v * a  # (B, T, d)
        m = torch.cat([a, v], dim=1)  # (B, 2T, d)
        return self.norm(g + self.dropout(self.attn(g, m, m, need_weights=False)[0]))


class SpatialChannelAttention(nn.Module):
    """CMRAN's audio-guided channel and spatial attention over the k = g*g cells of each second.

    With V (S, k, Dv) the cells of S = B*T seconds and a (S, Da):
        channel:  u = mean_i (relu(W_a1 a) * relu(W_v1 V_i))          (S, Dv)
                  w_c = sigmoid(W_c relu(W_b u));  V' = V * (1 + w_c)  (channel weights, residual)
        spatial:  x_i = tanh(w_s . (relu(W_v2 V'_i) * relu(W_a2 a)))   (S, k)
                  alpha = softmax_i(x);  out = sum_i alpha_i V'_i       (S, Dv)
    `channel_input` (default V) is the feature the channel weights are computed from (CMBS feeds a
    self-attended V there while weighting the raw V).
    """

    def __init__(self, audio_dim: int, visual_dim: int, hidden: int) -> None:
        super().__init__()
        self.channel_v = nn.Linear(visual_dim, visual_dim)  # W_v1
        self.channel_a = nn.Linear(audio_dim, visual_dim)  # W_a1
        self.channel_bottleneck = nn.Linear(visual_dim, hidden)  # W_b
        self.channel_out = nn.Linear(hidden, visual_dim)  # W_c
        self.spatial_v = nn.Linear(visual_dim, hidden)  # W_v2
        self.spatial_a = nn.Linear(audio_dim, hidden)  # W_a2
        self.spatial_out = nn.Linear(hidden, 1)  # w_s

    def attend(self, V: torch.Tensor, a: torch.Tensor,
               channel_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """V (S, k, Dv), a (S, Da) -> attended (S, Dv), spatial weights (S, k)."""
        src = V if channel_input is None else channel_input
        u = (F.relu(self.channel_a(a)).unsqueeze(1) * F.relu(self.channel_v(src))).mean(1)  # (S, Dv)
        w_c = torch.sigmoid(self.channel_out(F.relu(self.channel_bottleneck(u))))  # (S, Dv)
        V_c = V * (w_c.unsqueeze(1) + 1)  # (S, k, Dv)
        q = F.relu(self.spatial_v(V_c)) * F.relu(self.spatial_a(a)).unsqueeze(1)  # (S, k, hidden)
        alpha = torch.softmax(torch.tanh(self.spatial_out(q).squeeze(-1)), dim=-1)  # (S, k)
        return torch.bmm(alpha.unsqueeze(1), V_c).squeeze(1), alpha  # (S, Dv), (S, k)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """visual (B, T, g, g, Dv), audio (B, T, Da) -> (B, T, Dv), attention (B, T, g*g)."""
        B, T = audio.shape[:2]
        V = visual.reshape(B * T, -1, visual.shape[-1])  # (S, k, Dv)
        out, alpha = self.attend(V, audio.reshape(B * T, -1))
        return out.view(B, T, -1), alpha.view(B, T, -1)
