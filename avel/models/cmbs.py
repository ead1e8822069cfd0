"""CMBS: Cross-Modal Background Suppression (Xia and Zhao, CVPR 2022).

Structure of the public code (marmot-xy/CMBS, model/main_model.py, model/models.py), batch-first here:

  visual attention (both settings), on the cells V (S, 49, 512) of each second after
  dropout(relu(W_fc V)):
    V_s = LN(V + dropout(softmax(Q K^T) W_val V))     self-attention over the cells (Q, K: 512 -> 128)
    m   = sum_i softmax_i(tanh(w . (relu(W_3 V_s,i) * relu(W_avg mean_i V_s,i)))) V_s,i   (S, 512)
    c, alpha = SpatialChannelAttention(V, a, channel_input=V_s)    CMRAN's channel + spatial attention
    out = c + beta * sigmoid(m) * c                                beta 0.4 (weak 0.5)
  supervised (alpha_g = 0.1, gamma = 0.3):
    h_a, h_v = BiLSTM_a(a) (128 -> 2x128), BiLSTM_v(out) (512 -> 2x256)
    k_v, k_a = Encoder_v(h_v), Encoder_a(h_a)          CMRAN encoders (FFN 1024), d = 256
    q_a, q_v = Decoder_a(h_a, k_v), Decoder_v(h_v, k_a)
    g_a, g_v = sigmoid(w_a . k_a), sigmoid(w_v . k_v)  (B, T) audio / visual event gates
    q_v = q_v + alpha_g g_a q_v;  q_a = q_a + alpha_g g_v q_a          background suppression
    s_av = (topk4_t(W_vc q_v) + topk4_t(W_ac q_a)) / 2   (B, 28): mean of the 4 highest seconds
    q_v = AVInter(q_v, q_a);  q_a = VAInter(q_a, q_v)   4 heads, attention dropout 0.2
    h = (q_v + q_a) / 2;  r_t = w_r . h_t;  s = W_s max_t h_t + gamma s_av   (B, T), (B, 28)
    loss = BCE(r, e) + BCE(g_a g_v, e) + CE(s, y) + CE(s_av, y)   e: event seconds, y: the video's class
    prediction: class argmax(s) where sigmoid(r_t) > 0.5, else background
  weak (alpha_g = 0.2, gamma = 0.5, beta = 0.5): no LSTMs (encoders read the attended features and
    audio; encoder FFN 2048, decoder FFN 1024); gates swapped (g_a from k_v, g_v from k_a);
    q_v = (1 - alpha_g) q_v + alpha_g g_a q_v (likewise q_a); class-wise gates
    G_v = sigmoid(W_vc q_v), G_a = sigmoid(W_ac q_a) (B, T, 29); AVInter / VAInter with 2 heads;
    cas = W_cas h (B, T, 29);  cas = gamma G_v cas + gamma G_a cas;  raw = topk4_t(cas) (B, 29)
    g = (g_a + g_v) / 2;  video score = softmax(max_t g_t raw);  loss = MultiLabelSoftMargin(score, label)
    prediction (their test): sigmoid(g_t) > 0.5 decides event vs background. g_t is already a
    probability, so sigmoid(g_t) > 0.5 always holds and every second takes argmax(raw) (over 29
    classes, background included): avel reproduces that rule as it is.

`logits` = avel.models.blocks.gated_logits(relevance, class scores): their per-second prediction as
the argmax. `method_loss` holds the losses above (the supervised validation in their script leaves
out the CE(s_av) term; avel validates with the training objective). The BCE on g_a g_v is a
BCE-with-logits on a product of sigmoids, as in their code.

avel's version keeps the layers and sizes; the parameters their forward never uses are not built
(the attention's ave_bottleneck, the decoder layers' self_attn, the encoder/decoder template layers,
supervised video_norm / audio_norm, weak classifier). The LSTMs' dropout=0.2 does nothing with one
layer and is not set. Options in `cfg.extra` (DEFAULTS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avel.models.blocks import (AudioVisualInteraction, RelationDecoder, RelationEncoder, SpatialChannelAttention,
                                gated_logits, method_options, top_k_mean)
from avel.models.cmran import event_seconds, video_event_class
from avel.models.registry import ModelConfig, ModelOutput, register_model

DEFAULTS: dict[bool, dict[str, float | int]] = {
    False: {"d_model": 256, "alpha": 0.1, "gamma": 0.3, "beta": 0.4, "heads": 4, "encoder_layers": 2,
            "decoder_layers": 1, "encoder_feedforward": 1024, "decoder_feedforward": 1024, "dropout": 0.1,
            "input_dropout": 0.2, "att_hidden": 256, "att_dropout": 0.2, "self_att_dim": 128,
            "inter_heads": 4, "inter_dropout": 0.2, "top_k": 4},
    True: {"d_model": 256, "alpha": 0.2, "gamma": 0.5, "beta": 0.5, "heads": 4, "encoder_layers": 2,
           "decoder_layers": 1, "encoder_feedforward": 2048, "decoder_feedforward": 1024, "dropout": 0.1,
           "input_dropout": 0.1, "att_hidden": 256, "att_dropout": 0.2, "self_att_dim": 128,
           "inter_heads": 2, "inter_dropout": 0.2, "top_k": 4},
}
# alpha: background-suppression gate weight; gamma: weight of the audio/visual class scores (s_av,
# weak: the class-wise gates); beta: weight of the self-attended visual gate; top_k: seconds averaged
# by the top-k pooling; *_feedforward: FFN widths; att_dropout: dropout on the cells' self-attention;
# self_att_dim: its query/key width; input_dropout: after the visual FC; the rest as CMRAN's.

_ATT = "spatial_channel_att."
# Their state-dict key prefix -> avel's (None: a parameter their forward never uses, not kept).
# Checkpoints saved from their nn.DataParallel wrapper carry a leading "module." to strip first.
_COMMON_KEYS: dict[str, str | None] = {
    "v_fc.": "visual_fc.",
    _ATT + "affine_video_1.": "attention.channel_v.",
    _ATT + "affine_audio_1.": "attention.channel_a.",
    _ATT + "affine_bottleneck.": "attention.channel_bottleneck.",
    _ATT + "affine_v_c_att.": "attention.channel_out.",
    _ATT + "affine_video_2.": "attention.spatial_v.",
    _ATT + "affine_audio_2.": "attention.spatial_a.",
    _ATT + "affine_v_s_att.": "attention.spatial_out.",
    _ATT + "video_query.": "cell_attention.query.",
    _ATT + "video_key.": "cell_attention.key.",
    _ATT + "video_value.": "cell_attention.value.",
    _ATT + "norm.": "cell_attention.norm.",
    _ATT + "affine_video_ave.": "cell_attention.pool_mean.",
    _ATT + "affine_video_3.": "cell_attention.pool_cells.",
    _ATT + "ave_v_att.": "cell_attention.pool_out.",
    _ATT + "ave_bottleneck.": None,
    **{f"{m}_{p}.affine_matrix.": f"{m}_{p}.proj." for m in ("video", "audio") for p in ("encoder", "decoder")},
    **{f"{m}_encoder.encoder.layers.": f"{m}_encoder.layers." for m in ("video", "audio")},
    **{f"{m}_decoder.decoder.layers.": f"{m}_decoder.layers." for m in ("video", "audio")},
    **{f"{m}_decoder.decoder.layers.{i}.{name}.": (f"{m}_decoder.layers.{i}.cross_attn." if keep else None)
       for m in ("video", "audio") for i in range(int(DEFAULTS[False]["decoder_layers"]))
       for name, keep in (("multihead_attn", True), ("self_attn", False))},
    **{f"{m}_{p}.{p}_layer.": None for m in ("video", "audio") for p in ("encoder", "decoder")},
    "audio_gated.0.": "audio_gate.",
    "video_gated.0.": "video_gate.",
    "audio_cas.": "audio_cas.",
    "video_cas.": "video_cas.",
    "AVInter.video_multihead.": "av_interaction.attn.",
    "AVInter.norm1.": "av_interaction.norm.",
    "VAInter.video_multihead.": "va_interaction.attn.",
    "VAInter.norm1.": "va_interaction.norm.",
}
KEY_MAP: dict[str, str | None] = {
    **_COMMON_KEYS,
    "audio_visual_rnn_layer.audio_rnn.": "lstm_audio.",
    "audio_visual_rnn_layer.visual_rnn.": "lstm_video.",
    "localize_module.classifier.": "relevance.",
    "localize_module.event_classifier.": "classes.",
    "video_norm.": None, "audio_norm.": None,
}
WEAK_KEY_MAP: dict[str, str | None] = {
    **_COMMON_KEYS,
    "CAS_model.classifier.0.": "cas.",
    "classifier.": None,
}


class CellSelfAttention(nn.Module):
    """CMBS's visual self-attention over the cells and its self-pooled summary (see the module docstring)."""

    def __init__(self, visual_dim: int, hidden: int, qk_dim: int, dropout: float) -> None:
        super().__init__()
        self.query, self.key = nn.Linear(visual_dim, qk_dim), nn.Linear(visual_dim, qk_dim)
        self.value = nn.Linear(visual_dim, visual_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(visual_dim)
        self.pool_mean = nn.Linear(visual_dim, hidden)  # W_avg on the cells' mean
        self.pool_cells = nn.Linear(visual_dim, hidden)  # W_3 on every cell
        self.pool_out = nn.Linear(hidden, 1)  # w

    def forward(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """V (S, k, Dv) -> self-attended cells V_s (S, k, Dv), their self-pooled vector m (S, Dv)."""
        energy = torch.bmm(self.query(V), self.key(V).transpose(1, 2))  # (S, k, k), unscaled
        V_s = self.norm(V + self.dropout(torch.bmm(torch.softmax(energy, dim=-1), self.value(V))))  # (S, k, Dv)
        q = F.relu(self.pool_cells(V_s)) * F.relu(self.pool_mean(V_s.mean(1))).unsqueeze(1)  # (S, k, hidden)
        w = torch.softmax(torch.tanh(self.pool_out(q).squeeze(-1)), dim=-1)  # (S, k)
        return V_s, torch.bmm(w.unsqueeze(1), V_s).squeeze(1)


class CMBS(nn.Module):
    """forward(audio (B,T,128), visual (B,T,7,7,512)) -> ModelOutput(logits (B,T,C), attention (B,T,49))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        o = method_options(cfg, DEFAULTS[cfg.weak])
        self.weak, self.num_classes = cfg.weak, cfg.num_classes
        self.alpha, self.gamma, self.beta, self.top_k = (float(o["alpha"]), float(o["gamma"]), float(o["beta"]),
                                                         int(o["top_k"]))
        d, Da, Dv, C = int(o["d_model"]), cfg.audio_dim, cfg.visual_dim, cfg.num_classes
        self.visual_fc = nn.Linear(Dv, Dv)
        self.input_dropout = nn.Dropout(float(o["input_dropout"]))
        self.cell_attention = CellSelfAttention(Dv, int(o["att_hidden"]), int(o["self_att_dim"]),
                                                float(o["att_dropout"]))
        self.attention = SpatialChannelAttention(Da, Dv, int(o["att_hidden"]))
        if cfg.weak:
            in_a, in_v = Da, Dv
        else:
            self.lstm_audio = nn.LSTM(Da, d // 2, batch_first=True, bidirectional=True)  # -> d
            self.lstm_video = nn.LSTM(Dv, d, batch_first=True, bidirectional=True)  # -> 2d
            in_a, in_v = d, 2 * d
        common = dict(d_model=d, heads=int(o["heads"]), dropout=float(o["dropout"]))
        enc = dict(common, feedforward=int(o["encoder_feedforward"]), layers=int(o["encoder_layers"]))
        dec = dict(common, feedforward=int(o["decoder_feedforward"]), layers=int(o["decoder_layers"]))
        self.video_encoder, self.video_decoder = RelationEncoder(in_v, **enc), RelationDecoder(in_v, **dec)
        self.audio_encoder, self.audio_decoder = RelationEncoder(in_a, **enc), RelationDecoder(in_a, **dec)
        self.audio_gate, self.video_gate = nn.Linear(d, 1), nn.Linear(d, 1)
        K = C if cfg.weak else C - 1  # class-score width: weak with background
        self.audio_cas, self.video_cas = nn.Linear(d, K), nn.Linear(d, K)
        heads, drop = int(o["inter_heads"]), float(o["inter_dropout"])
        self.av_interaction = AudioVisualInteraction(d, heads, drop)
        self.va_interaction = AudioVisualInteraction(d, heads, drop)
        if cfg.weak:
            self.cas = nn.Conv1d(d, C, kernel_size=1, bias=False)  # per-second class activation
        else:
            self.relevance = nn.Linear(d, 1)
            self.classes = nn.Linear(d, C - 1)

    def attend(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, T, Da), visual (B, T, g, g, Dv) -> attended visual (B, T, Dv), spatial attention (B, T, k)."""
        B, T = audio.shape[:2]
        V = self.input_dropout(F.relu(self.visual_fc(visual))).reshape(B * T, -1, visual.shape[-1])  # (S, k, Dv)
        V_s, m = self.cell_attention(V)  # (S, k, Dv), (S, Dv)
        c, alpha = self.attention.attend(V, audio.reshape(B * T, -1), channel_input=V_s)  # (S, Dv), (S, k)
        out = c + self.beta * torch.sigmoid(m) * c  # (S, Dv)
        return out.view(B, T, -1), alpha.view(B, T, -1)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, **_: torch.Tensor) -> ModelOutput:
        v, alpha = self.attend(audio, visual)  # (B, T, Dv), (B, T, 49)
        a = audio
        if not self.weak:
            a, v = self.lstm_audio(a)[0], self.lstm_video(v)[0]  # (B, T, d), (B, T, 2d)
        k_v, k_a = self.video_encoder(v), self.audio_encoder(a)  # (B, T, d) each
        q_a, q_v = self.audio_decoder(a, k_v), self.video_decoder(v, k_a)  # (B, T, d) each
        if self.weak:
            g_a, g_v = torch.sigmoid(self.audio_gate(k_v)), torch.sigmoid(self.video_gate(k_a))  # (B, T, 1)
            q_v = (1 - self.alpha) * q_v + self.alpha * g_a * q_v
            q_a = (1 - self.alpha) * q_a + self.alpha * g_v * q_a
            G_v, G_a = torch.sigmoid(self.video_cas(q_v)), torch.sigmoid(self.audio_cas(q_a))  # (B, T, C)
        else:
            g_a, g_v = torch.sigmoid(self.audio_gate(k_a)), torch.sigmoid(self.video_gate(k_v))  # (B, T, 1)
            q_v = q_v + self.alpha * g_a * q_v  # background suppression
            q_a = q_a + self.alpha * g_v * q_a
            s_av = (top_k_mean(self.video_cas(q_v), self.top_k) + top_k_mean(self.audio_cas(q_a), self.top_k)) / 2
        q_v = self.av_interaction(q_v, q_a)  # (B, T, d)
        q_a = self.va_interaction(q_a, q_v)
        h = (q_v + q_a) / 2  # (B, T, d)
        if self.weak:
            cas = self.cas(h.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
            cas = self.gamma * G_v * cas + self.gamma * G_a * cas
            raw = top_k_mean(cas, self.top_k)  # (B, C)
            gate = ((g_a + g_v) / 2).squeeze(-1)  # (B, T), a probability
            video_probs = torch.softmax((gate.unsqueeze(-1) * raw.unsqueeze(1)).amax(dim=1), dim=-1)  # (B, C)
            # their test thresholds sigmoid(gate) at 0.5: the gate is passed as the relevance logit
            extras = {"relevance": gate, "class_scores": raw, "video_probs": video_probs}
        else:
            relevance = self.relevance(h).squeeze(-1)  # (B, T)
            scores = self.classes(h.amax(dim=1)) + self.gamma * s_av  # (B, C-1)
            extras = {"relevance": relevance, "class_scores": scores, "gate": (g_a * g_v).squeeze(-1),
                      "av_scores": s_av}
        logits = gated_logits(extras["relevance"], extras["class_scores"], self.num_classes)  # (B, T, C)
        return ModelOutput(logits=logits, attention=alpha, extras=extras)

    def method_loss(self, out: ModelOutput, target: torch.Tensor, weak: bool) -> torch.Tensor:
        """Supervised: BCE(r) + BCE(gate) + CE(s) + CE(s_av); weak: MultiLabelSoftMargin(video score)."""
        x = {k: t.float() for k, t in out.extras.items()}
        if weak:
            return F.multilabel_soft_margin_loss(x["video_probs"], target.float())
        e, y = event_seconds(target), video_event_class(target)
        return (F.binary_cross_entropy_with_logits(x["relevance"], e) + F.binary_cross_entropy_with_logits(x["gate"], e)
                + F.cross_entropy(x["class_scores"], y) + F.cross_entropy(x["av_scores"], y))


@register_model("CMBS", inputs=("audio", "visual"),
                description="Cross-Modal Background Suppression (Xia and Zhao, CVPR 2022); W-CMBS with --weak")
def cmbs(cfg: ModelConfig) -> nn.Module:
    """CMBS (supervised; `cfg.weak`: the weakly-supervised network of their weak_main_model)."""
    return CMBS(cfg)
