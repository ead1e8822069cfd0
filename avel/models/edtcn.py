"""ED-TCN, the paper's external temporal-labelling baseline (Sec. 6.3: 46.9% on AVE with V features).

C. Lea, M. D. Flynn, R. Vidal, A. Reiter, G. D. Hager, "Temporal Convolutional Networks for
Action Segmentation and Detection", CVPR 2017. The encoder-decoder TCN, as in the authors' Keras
`ED_TCN`: each encoder layer is a 'same' temporal convolution, spatial (channel) dropout,
ReLU, channel normalisation (divide each time step by its largest absolute activation + 1e-5)
and max-pooling by 2 in time; each decoder layer upsamples by 2 (repeating each step) and
applies the same convolution block with the encoder's widths in reverse; a per-time-step linear
layer and softmax label every step. Their default widths are [64, 96].

Adaptation to AVE (per-second labels over a 10 s video, on V features):
- input: the VGG-19 pool5 map of each second, global-average pooled to 512-d (the V model's
  feature), so the time axis is T seconds rather than video frames;
- pooling schedule: Lea et al. pool sequences of hundreds of frames; here T = 10, so pooling
  rounds up (an odd length repeats its last step before pooling) and the decoder crops each
  upsampled sequence back to the length the matching encoder layer saw:
  10 -> 5 -> 3 in the encoder, 3 -> 6 (crop 5) -> 10 in the decoder. Any T >= 1 works;
- convolution length 5 s (Lea et al. pick it near the mean action duration; AVE events last a
  few seconds of 10, and 5 is odd so 'same' padding is symmetric);
- spatial dropout: `cfg.dropout` (0 by default, like every avel model) instead of Lea et al.'s
  0.3: on 10-step clips dropping whole channels slowed training several-fold on AVE-Synth
  (docs/models.md); `cfg.extra["edtcn_dropout"] = 0.3` restores their setting;
- Keras' initialisation (Glorot-uniform weights, zero biases), as their code runs on Keras;
- 29 output classes (28 events + background), returned as logits; the trainer's softmax and
  cross-entropy replace Keras' softmax + categorical cross-entropy.
`cfg.extra` may override `edtcn_nodes` (widths), `edtcn_conv_len` and `edtcn_dropout`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avel.models.registry import ModelConfig, ModelOutput, register_model

DEFAULT_NODES = (64, 96)  # encoder widths of Lea et al.'s ED-TCN
DEFAULT_CONV_LEN = 5  # temporal kernel, seconds
LEA_DROPOUT = 0.3  # spatial dropout of Lea et al.'s code (set edtcn_dropout to it to match them)
NORM_EPS = 1e-5  # channel normalisation epsilon of Lea et al.'s code


def channel_norm(x: torch.Tensor) -> torch.Tensor:
    """Normalised ReLU's scaling: divide every time step by its largest |activation| (x: (B, C, T))."""
    return x / (x.abs().amax(dim=1, keepdim=True) + NORM_EPS)


def pool_time(x: torch.Tensor) -> torch.Tensor:
    """Max-pool by 2 over time, rounding up: (B, C, T) -> (B, C, ceil(T / 2))."""
    if x.shape[-1] % 2:
        x = torch.cat([x, x[..., -1:]], dim=-1)  # repeat the last step; max(x, x) = x
    return F.max_pool1d(x, kernel_size=2)


def upsample_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Repeat every step twice and crop to `length`: inverts `pool_time`'s windows."""
    return x.repeat_interleave(2, dim=-1)[..., :length]


class TemporalBlock(nn.Module):
    """'same' Conv1d -> spatial dropout -> ReLU -> channel normalisation, on (B, C, T)."""

    def __init__(self, c_in: int, c_out: int, conv_len: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, conv_len, padding=conv_len // 2)
        self.dropout = nn.Dropout1d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(F.relu(self.dropout(self.conv(x))))


def keras_init(layer: nn.Conv1d | nn.Linear) -> None:
    """Keras' defaults, as in Lea et al.'s code: Glorot-uniform weights, zero biases.

    With zero biases ReLU + channel normalisation is invariant to the input's scale, so the
    small-magnitude pooled VGG features are not drowned by random biases at the start.
    """
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


def pool_visual(visual: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, C) pool5 maps -> (B, T, C) by global average pooling; (B, T, C) passes through."""
    return visual.mean(dim=(2, 3)) if visual.dim() == 5 else visual


class EDTCN(nn.Module):
    """Encoder-decoder TCN over per-second visual vectors -> per-second class logits."""

    def __init__(self, in_dim: int, num_classes: int, nodes: tuple[int, ...], conv_len: int, dropout: float) -> None:
        super().__init__()
        if conv_len % 2 == 0 or conv_len < 1:
            raise ValueError(f"ED-TCN convolution length must be odd and positive, got {conv_len}")
        widths = [in_dim, *nodes]
        self.encoder = nn.ModuleList(
            TemporalBlock(widths[i], widths[i + 1], conv_len, dropout) for i in range(len(nodes))
        )
        rev = list(reversed(nodes))  # decoder widths: the encoder's, in reverse
        self.decoder = nn.ModuleList(
            TemporalBlock(rev[max(i - 1, 0)], rev[i], conv_len, dropout) for i in range(len(nodes))
        )
        self.classifier = nn.Linear(nodes[0], num_classes)
        for layer in [*(b.conv for b in (*self.encoder, *self.decoder)), self.classifier]:
            keras_init(layer)

    def forward(self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None,
                **_: torch.Tensor) -> ModelOutput:
        """visual (B, T, 7, 7, 512) or pooled (B, T, 512) -> logits (B, T, C); audio is not used."""
        x = pool_visual(visual).transpose(1, 2)  # (B, 512, T)
        lengths = []
        for block in self.encoder:
            x = block(x)  # (B, C_i, L)
            lengths.append(x.shape[-1])
            x = pool_time(x)  # (B, C_i, ceil(L / 2))
        for block, length in zip(self.decoder, reversed(lengths)):
            x = block(upsample_time(x, length))  # (B, C_j, L)
        logits = self.classifier(x.transpose(1, 2))  # (B, T, num_classes)
        return ModelOutput(logits=logits)


@register_model("ED-TCN", inputs=("visual",))
def ed_tcn(cfg: ModelConfig) -> nn.Module:
    """ED-TCN (Lea et al. CVPR 2017) on global-average-pooled V features (Sec. 6.3 baseline)."""
    return EDTCN(
        in_dim=cfg.visual_dim,
        num_classes=cfg.num_classes,
        nodes=tuple(cfg.extra.get("edtcn_nodes", DEFAULT_NODES)),
        conv_len=int(cfg.extra.get("edtcn_conv_len", DEFAULT_CONV_LEN)),
        dropout=float(cfg.extra.get("edtcn_dropout", cfg.dropout)),
    )
