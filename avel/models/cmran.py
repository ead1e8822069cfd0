"""CMRAN: Cross-Modal Relation-Aware Networks (Xu, Zeng, Wu, Tan, Gan, ACM MM 2020).

Structure of the public code (FloretCat/CMRAN, model/main_model.py), batch-first here:

    v  = dropout(relu(W_fc V))                             (B, T, 7, 7, 512) visual map, per cell
    v, alpha = SpatialChannelAttention(v, a)               (B, T, 512), (B, T, 49)   avel.models.blocks
    a_q = Decoder_a(a, Encoder_v(v))                       audio queries the encoded visual sequence
    v_q = Decoder_v(v, Encoder_a(a))                       visual queries the encoded audio sequence
    h   = AVInteraction(v_q, a_q)                          (B, T, d), d = 256
    supervised: r_t = w_r . h_t (event relevance, B x T); s = W_s max_t h_t (28 event classes)
    weak:       r_t as above; s = W_s max_t h_t over 29 classes (with background);
                video score = softmax(max_t sigmoid(r_t) s)

Encoders: Linear(in, d) + 2 self-attention layers (4 heads, FFN 2048, dropout 0.1); decoders:
Linear(in, d) + 1 cross-modal relation layer (the query attends over [memory; query]). The
interaction has 4 heads (weak: 2), attention dropout 0.1.

Prediction (their compute_accuracy_supervised): second t is class argmax(s) where sigmoid(r_t) > 0.5,
background elsewhere; `logits` are avel.models.blocks.gated_logits(r, s), whose argmax is that rule.
Losses (`method_loss`, their supv_main.py / weakly_main.py): supervised BCE-with-logits on r against
"some event in second t" + cross-entropy of s against the video's event class; weak
MultiLabelSoftMarginLoss of the softmax video score against the video label.

avel's version keeps the layers and sizes; it drops the parameters their forward never uses
(the attention's affine_video_guided_1/2, each decoder layer's self_attn), so every parameter
receives a gradient. Options (`cfg.extra`, defaults in DEFAULTS): d_model, heads, layers, FFN width,
dropouts, interaction heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avel.models.blocks import (AudioVisualInteraction, RelationDecoder, RelationEncoder, SpatialChannelAttention,
                                gated_logits, method_options)
from avel.models.registry import ModelConfig, ModelOutput, register_model

# The public code's defaults (supervised / weak differ only in the interaction's heads).
DEFAULTS: dict[bool, dict[str, float | int]] = {
    weak: {
        "d_model": 256,  # width of the relation blocks
        "heads": 4,  # attention heads of the encoders and decoders
        "encoder_layers": 2,  # self-attention layers per encoder
        "decoder_layers": 1,  # cross-modal relation layers per decoder
        "feedforward": 2048,  # FFN width in every layer
        "dropout": 0.1,  # dropout inside the encoder / decoder layers
        "input_dropout": 0.2,  # dropout after the visual FC
        "att_hidden": 256,  # hidden width of the channel bottleneck and the spatial attention
        "inter_heads": 2 if weak else 4,  # heads of the audio-video interaction
        "inter_dropout": 0.1,  # attention dropout of the interaction
    }
    for weak in (False, True)
}

# Their state-dict key prefix -> avel's (None: a parameter their forward never uses, not kept).
KEY_MAP: dict[str, str | None] = {
    "v_fc.": "visual_fc.",
    "spatial_channel_att.affine_video_1.": "attention.channel_v.",
    "spatial_channel_att.affine_audio_1.": "attention.channel_a.",
    "spatial_channel_att.affine_bottleneck.": "attention.channel_bottleneck.",
    "spatial_channel_att.affine_v_c_att.": "attention.channel_out.",
    "spatial_channel_att.affine_video_2.": "attention.spatial_v.",
    "spatial_channel_att.affine_audio_2.": "attention.spatial_a.",
    "spatial_channel_att.affine_v_s_att.": "attention.spatial_out.",
    "spatial_channel_att.affine_video_guided_": None,
    **{f"{mod}_{part}.affine_matrix.": f"{mod}_{part}.proj." for mod in ("video", "audio")
       for part in ("encoder", "decoder")},
    **{f"{mod}_encoder.encoder.layers.": f"{mod}_encoder.layers." for mod in ("video", "audio")},
    **{f"{mod}_decoder.decoder.layers.": f"{mod}_decoder.layers." for mod in ("video", "audio")},
    # the template layer each encoder / decoder deep-copies into its layers (registered, never called)
    **{f"{mod}_{part}.{part}_layer.": None for mod in ("video", "audio") for part in ("encoder", "decoder")},
    # the decoder layer's cross-modal attention; its self_attn is never called
    **{f"{mod}_decoder.decoder.layers.{i}.{name}.": (f"{mod}_decoder.layers.{i}.cross_attn." if keep else None)
       for mod in ("video", "audio") for i in range(int(DEFAULTS[False]["decoder_layers"]))
       for name, keep in (("multihead_attn", True), ("self_attn", False))},
    "AVInter.video_multihead.": "interaction.attn.",
    "AVInter.norm1.": "interaction.norm.",
    "localize_module.classifier.": "relevance.",
    "localize_module.event_classifier.": "classes.",
}


class CMRAN(nn.Module):
    """forward(audio (B,T,128), visual (B,T,7,7,512)) -> ModelOutput(logits (B,T,C), attention (B,T,49))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        o = method_options(cfg, DEFAULTS[cfg.weak])
        self.num_classes, self.weak = cfg.num_classes, cfg.weak
        d, Da, Dv = int(o["d_model"]), cfg.audio_dim, cfg.visual_dim
        blocks = dict(d_model=d, heads=int(o["heads"]), feedforward=int(o["feedforward"]), dropout=float(o["dropout"]))
        self.visual_fc = nn.Linear(Dv, Dv)
        self.input_dropout = nn.Dropout(float(o["input_dropout"]))
        self.attention = SpatialChannelAttention(Da, Dv, int(o["att_hidden"]))
        self.video_encoder = RelationEncoder(Dv, layers=int(o["encoder_layers"]), **blocks)
        self.video_decoder = RelationDecoder(Dv, layers=int(o["decoder_layers"]), **blocks)
        self.audio_encoder = RelationEncoder(Da, layers=int(o["encoder_layers"]), **blocks)
        self.audio_decoder = RelationDecoder(Da, layers=int(o["decoder_layers"]), **blocks)
        self.interaction = AudioVisualInteraction(d, int(o["inter_heads"]), float(o["inter_dropout"]))
        self.relevance = nn.Linear(d, 1)  # event relevance r_t per second
        C = cfg.num_classes
        self.classes = nn.Linear(d, C if cfg.weak else C - 1)  # video class scores (weak: with background)

    def fused(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The interaction's output h (B, T, d) and the spatial attention (B, T, 49)."""
        v = self.input_dropout(F.relu(self.visual_fc(visual)))  # (B, T, 7, 7, Dv)
        v, alpha = self.attention(v, audio)  # (B, T, Dv), (B, T, 49)
        a_q = self.audio_decoder(audio, self.video_encoder(v))  # (B, T, d)
        v_q = self.video_decoder(v, self.audio_encoder(audio))  # (B, T, d)
        return self.interaction(v_q, a_q), alpha

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, **_: torch.Tensor) -> ModelOutput:
        h, alpha = self.fused(audio, visual)
        relevance = self.relevance(h).squeeze(-1)  # (B, T)
        scores = self.classes(h.amax(dim=1))  # (B, C-1), weak (B, C)
        extras = {"relevance": relevance, "class_scores": scores}
        if self.weak:  # video score: softmax over classes of max_t sigmoid(r_t) * s
            extras["video_probs"] = torch.softmax((torch.sigmoid(relevance).unsqueeze(-1)
                                                   * scores.unsqueeze(1)).amax(dim=1), dim=-1)  # (B, C)
        return ModelOutput(logits=gated_logits(relevance, scores, self.num_classes), attention=alpha, extras=extras)

    def method_loss(self, out: ModelOutput, target: torch.Tensor, weak: bool) -> torch.Tensor:
        """CMRAN's objective: supervised BCE(r) + CE(s); weak MultiLabelSoftMargin(video score)."""
        return relevance_class_loss(out, target, weak)


def relevance_class_loss(out: ModelOutput, target: torch.Tensor, weak: bool) -> torch.Tensor:
    """Supervised (target (B, T, C)): BCE-with-logits of the relevance against "an event in second t"
    + cross-entropy of the class scores against the video's event class (CMRAN's supv_main.py).
    Weak (target (B, C)): MultiLabelSoftMarginLoss of the softmax video score (weakly_main.py)."""
    x = {k: v.float() for k, v in out.extras.items()}
    if weak:
        return F.multilabel_soft_margin_loss(x["video_probs"], target.float())
    return F.binary_cross_entropy_with_logits(x["relevance"], event_seconds(target)) \
        + F.cross_entropy(x["class_scores"], video_event_class(target))


def event_seconds(target: torch.Tensor) -> torch.Tensor:
    """(B, T, C) one-hot per second -> (B, T) 1 where an event class (not background) is on."""
    return target[..., :-1].amax(-1).float()


def video_event_class(target: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B,) the video's event class, as their code takes it: the largest per-second
    argmax over the event columns (a background second's argmax is 0)."""
    return target[..., :-1].argmax(-1).amax(-1)


@register_model("CMRAN", inputs=("audio", "visual"),
                description="Cross-Modal Relation-Aware Networks (Xu et al., ACM MM 2020); W-CMRAN with --weak")
def cmran(cfg: ModelConfig) -> nn.Module:
    """CMRAN (supervised; `cfg.weak`: the weakly-supervised network of their weakly_main.py)."""
    return CMRAN(cfg)
