"""The supplement's attention variants (Section 3.2, Table 3): A', A'-att, A'+V, A'+V-co-att.

A' models read the audio as a *spatial map*: the last pooling layer of VGGish (pool5, 6 x 4 cells
of 512 channels for a 96 x 64 log-mel patch, i.e. 6 time x 4 frequency cells per second) instead
of its 128-d embedding, batch key "audio_map", shape (B, T, H, W, C) with (H, W, C) =
`cfg.audio_map_shape` (default (6, 4, 512)). AVE-Synth provides such maps with `--audio-maps`.

  A'           audio map globally average pooled -> LSTM -> per-second head
  A'-att       visual-guided audio attention: the audio map pooled by attention over its H*W cells,
               guided by the globally pooled visual feature -> LSTM -> head
  A'+V         pooled audio map + pooled visual map, fused like A+V (cfg.fusion at cfg.fusion_stage,
               default concat after the two LSTMs)
  A'+V-co-att  co-attention: audio-guided visual attention (guided by the pooled audio map) and
               visual-guided audio attention (guided by the pooled visual map), computed in parallel
               from the un-attended features; both attended vectors feed two LSTMs, fused like A+V

Visual-guided audio attention is eqs. 2-4 with the roles swapped:
    x_t = W_f tanh(W_a U_a(a_t) + (W_v U_v(v̄_t)) 1^T),  w_t = softmax(x_t),  a_t^att = sum_i w_t^i a_t^i
where a_t^i are the k = H*W cells of the audio map and v̄_t the average of the 7x7 visual regions;
it reuses `AudioGuidedAttention` (guide -> "audio" argument, attended map -> "visual" argument).
Outputs: `ModelOutput.audio_attention` (B, T, H*W) over the cells in row-major (h, w) order, and
`ModelOutput.attention` (B, T, 49) where the visual map is attended.
"""

from __future__ import annotations

import torch
from torch import nn

from avel.errors import AvelError
from avel.models.attention import AudioGuidedAttention
from avel.models.localizers import FUSION_STAGES, SingleStream
from avel.models.registry import ModelConfig, ModelOutput, register_model

DEFAULT_AUDIO_MAP_SHAPE = (6, 4, 512)  # VGGish pool5 per 0.96 s patch: 6 time x 4 mel cells, 512 channels


def audio_map_shape(cfg: ModelConfig) -> tuple[int, int, int]:
    """(H, W, C) of the audio maps the model is built for."""
    H, W, C = cfg.audio_map_shape or DEFAULT_AUDIO_MAP_SHAPE
    return int(H), int(W), int(C)


def pool_map(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling of per-second maps: (B, T, H, W, C) -> (B, T, C)."""
    return x.mean(dim=(2, 3))


class VisualGuidedAudioAttention(nn.Module):
    """Attention over the H*W cells of the audio map, guided by the pooled visual feature."""

    def __init__(self, visual_dim: int, audio_shape: tuple[int, int, int], d: int) -> None:
        super().__init__()
        H, W, C = audio_shape
        # eqs. 2-4 with the roles swapped: the guide is visual, the attended regions are audio cells
        self.att = AudioGuidedAttention(audio_dim=visual_dim, visual_dim=C, d=d, k=H * W)

    def forward(self, visual_vec: torch.Tensor, audio_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """visual_vec (B, T, Dv), audio_map (B, T, H, W, C) -> attended audio (B, T, C), weights (B, T, H*W)."""
        return self.att(visual_vec, audio_map)


class AudioMapLocalizer(nn.Module):
    """A' family: `audio` is "pool" or "att" (visual-guided); `visual` is None, "pool" or "att" (audio-guided)."""

    def __init__(self, cfg: ModelConfig, *, audio: str, visual: str | None) -> None:
        super().__init__()
        self.name = cfg.name
        self.shape = audio_map_shape(cfg)
        C = self.shape[2]
        self.audio_att = VisualGuidedAudioAttention(cfg.visual_dim, self.shape, cfg.attention_dim) if audio == "att" else None
        self.visual_att = (AudioGuidedAttention(C, cfg.visual_dim, cfg.attention_dim, cfg.visual_grid ** 2)
                           if visual == "att" else None)
        self.use_visual = visual is not None
        if self.use_visual:
            if cfg.fusion_stage not in FUSION_STAGES:
                raise AvelError(f"unknown fusion stage '{cfg.fusion_stage}'; valid: {', '.join(FUSION_STAGES)}")
            self.body = FUSION_STAGES[cfg.fusion_stage](C, cfg.visual_dim, cfg)
        else:
            self.body = SingleStream(C, cfg)

    def _check(self, audio_map: torch.Tensor | None) -> torch.Tensor:
        if audio_map is None:
            raise AvelError(f"model {self.name} needs spatial audio maps (dataset key audio_map; "
                            "AVE-Synth makes them with --audio-maps)")
        if tuple(audio_map.shape[2:]) != self.shape:
            raise AvelError(f"model {self.name} was built for audio maps of shape {self.shape} per second, "
                            f"got {tuple(audio_map.shape[2:])}")
        return audio_map

    def forward(self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None,
                audio_map: torch.Tensor | None = None, **_: torch.Tensor) -> ModelOutput:
        audio_map = self._check(audio_map)  # (B, T, H, W, C)
        if visual is None and (self.use_visual or self.audio_att is not None):
            raise AvelError(f"model {self.name} needs the visual feature maps (dataset key visual)")
        a_pool = pool_map(audio_map)  # (B, T, C)
        v_pool = pool_map(visual) if visual is not None else None  # (B, T, Dv)
        a_vec, audio_attention = (a_pool, None) if self.audio_att is None else self.audio_att(v_pool, audio_map)
        if not self.use_visual:
            return ModelOutput(logits=self.body(a_vec), audio_attention=audio_attention)
        # (B, T, Dv), (B, T, 49) | None: the visual attention is guided by the un-attended audio map
        v_vec, attention = (v_pool, None) if self.visual_att is None else self.visual_att(a_pool, visual)
        return ModelOutput(logits=self.body(a_vec, v_vec), attention=attention, audio_attention=audio_attention)


# name -> (audio encoder, visual encoder, inputs read, description); Table 3 of the supplement
SUPPLEMENT_MODELS: dict[str, tuple[str, str | None, tuple[str, ...], str]] = {
    "A'": ("pool", None, ("audio_map",), "audio only, from the globally pooled VGGish pool5 map"),
    "A'-att": ("att", None, ("visual", "audio_map"), "audio only, pooled by visual-guided audio attention"),
    "A'+V": ("pool", "pool", ("visual", "audio_map"), "pooled audio map + pooled visual map, fused like A+V"),
    "A'+V-co-att": ("att", "att", ("visual", "audio_map"),
                    "co-attention: visual-guided audio + audio-guided visual attention, fused like A+V"),
}


def _register(name: str, audio: str, visual: str | None, inputs: tuple[str, ...], description: str) -> None:
    def build(cfg: ModelConfig) -> nn.Module:
        return AudioMapLocalizer(cfg, audio=audio, visual=visual)

    register_model(name, inputs=inputs, description=description)(build)


for _name, (_audio, _visual, _inputs, _desc) in SUPPLEMENT_MODELS.items():
    _register(_name, _audio, _visual, _inputs, _desc)
