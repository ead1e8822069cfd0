"""The Table 1 event localizers: A, V, V-att, A+V, A+V-att and DMRN (Sections 4.1-4.4).

One network family, assembled from four parts:
  visual encoder   global average pooling of the 7x7 map (V, A+V) or audio-guided attention (V-att, A+V-att)
  temporal model   an LSTM per stream (hidden 128; bidirectional like the authors' code, `cfg.bidirectional`)
  fusion           any method in `avel.models.fusion.FUSIONS` (cfg.fusion), applied at cfg.fusion_stage:
                   early (on a_t and the visual vector, before one LSTM), late (on the two LSTM outputs;
                   the paper's choice) or decision (on per-modality class scores, before the softmax)
  classifier       a per-second FC head shared over time (ReLU, FC 64, ReLU, FC C, as the authors' code)

The weakly-supervised W- models are the same networks built with `cfg.weak=True`; only the loss
differs (MIL average pooling of the per-second scores, eq. 7, see avel.train.losses), so at test time
they predict every second exactly like the supervised ones.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from avel.errors import AvelError
from avel.models.attention import AudioGuidedAttention
from avel.models.fusion import create_fusion
from avel.models.parts import Head, Temporal
from avel.models.registry import ModelConfig, ModelOutput, register_model


def paper_name(cfg: ModelConfig) -> str:
    """The name Table 1 uses: `W-A+V-att` for a weakly-supervised `A+V-att`."""
    return f"W-{cfg.name}" if cfg.weak else cfg.name


class SingleStream(nn.Module):
    """One modality: LSTM then head (A, V, V-att)."""

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.temporal = Temporal(in_dim, cfg)
        self.head = Head(self.temporal.out_dim, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.temporal(x))


class EarlyFusion(nn.Module):
    """fuse(a_t, v_t) per second, then one LSTM and the head."""

    def __init__(self, dim_a: int, dim_v: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.fusion = create_fusion(cfg.fusion, dim_a, dim_v, dim_v, cfg.fusion_blocks)  # joint size: visual (512)
        self.stream = SingleStream(self.fusion.out_dim, cfg)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.stream(self.fusion(a, v))  # (B, T, C)


class LateFusion(nn.Module):
    """An LSTM per modality, fuse their outputs, then the head (the paper's Table 1 setting)."""

    def __init__(self, dim_a: int, dim_v: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.temporal_a = Temporal(dim_a, cfg)
        self.temporal_v = Temporal(dim_v, cfg)
        self.fusion = create_fusion(cfg.fusion, self.temporal_a.out_dim, self.temporal_v.out_dim,
                                    self.temporal_a.out_dim, cfg.fusion_blocks)
        self.head = Head(self.fusion.out_dim, cfg.num_classes)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(self.temporal_a(a), self.temporal_v(v)))  # (B, T, C)


class DecisionFusion(nn.Module):
    """A full single-modality network per stream; fuse their class scores just before the softmax.

    A fusion whose output is not C wide (e.g. concat: 2C) is followed by a linear classifier to C.
    So is a *bounded* fusion (`bounded = True`: GMU and DMRN end in tanh): scores in [-1, 1] fed
    straight to the softmax cap every class at e / (e + (C-1)/e), 0.21 for 29 classes, so such a
    model cannot fit its labels (decision GMU stayed at the majority rate). The read-out chosen is a
    learned linear layer C -> C rather than a learned temperature: it is what the unbounded-width
    fusions already get, it can also re-weight classes, and under Adam (lr 1e-3) its C weights per
    class reach the needed logit range within tens of steps, where a single temperature scalar
    moves about lr per step and needs thousands (a temperature near 3 gives 0.9 for 29 classes).
    """

    def __init__(self, dim_a: int, dim_v: int, cfg: ModelConfig) -> None:
        super().__init__()
        C = cfg.num_classes
        self.stream_a = SingleStream(dim_a, cfg)
        self.stream_v = SingleStream(dim_v, cfg)
        self.fusion = create_fusion(cfg.fusion, C, C, C, cfg.fusion_blocks)
        needs_readout = self.fusion.out_dim != C or getattr(self.fusion, "bounded", False)
        self.classifier = nn.Linear(self.fusion.out_dim, C) if needs_readout else nn.Identity()

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fusion(self.stream_a(a), self.stream_v(v)))  # (B, T, C)


FUSION_STAGES: dict[str, type[nn.Module]] = {"early": EarlyFusion, "late": LateFusion, "decision": DecisionFusion}


class GlobalAvgPool(nn.Module):
    """Visual map -> vector by averaging the regions (the models without attention)."""

    def forward(self, audio: torch.Tensor | None, visual: torch.Tensor) -> tuple[torch.Tensor, None]:
        B, T = visual.shape[:2]
        return visual.reshape(B, T, -1, visual.shape[-1]).mean(dim=2), None  # (B, T, Dv)


class Localizer(nn.Module):
    """forward(audio (B,T,Da), visual (B,T,g,g,Dv)) -> ModelOutput(logits (B,T,C), attention (B,T,g*g) | None).

    `use_audio`: the audio stream feeds the classifier; `visual`: None, "pool" or "att" (audio-guided).
    """

    def __init__(self, cfg: ModelConfig, *, use_audio: bool, visual: str | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.use_audio = use_audio
        encoders = {"pool": GlobalAvgPool, "att": lambda: AudioGuidedAttention(
            cfg.audio_dim, cfg.visual_dim, cfg.attention_dim, cfg.visual_grid ** 2)}
        self.visual_encoder = encoders[visual]() if visual else None
        if use_audio and visual:
            if cfg.fusion_stage not in FUSION_STAGES:
                raise AvelError(f"unknown fusion stage '{cfg.fusion_stage}'; valid: {', '.join(FUSION_STAGES)}")
            self.body = FUSION_STAGES[cfg.fusion_stage](cfg.audio_dim, cfg.visual_dim, cfg)
        else:
            self.body = SingleStream(cfg.audio_dim if use_audio else cfg.visual_dim, cfg)

    def forward(self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None,
                **_: torch.Tensor) -> ModelOutput:
        attention = None
        if self.visual_encoder is not None:
            v, attention = self.visual_encoder(audio, visual)  # (B, T, Dv), (B, T, k) | None
            logits = self.body(audio, v) if self.use_audio else self.body(v)
        else:
            logits = self.body(audio)
        return ModelOutput(logits=logits, attention=attention)


# name -> (audio stream used, visual encoder, inputs read)
TABLE1_MODELS: dict[str, tuple[bool, str | None, tuple[str, ...], str]] = {
    "A": (True, None, ("audio",), "audio only: LSTM on VGGish features"),
    "V": (False, "pool", ("visual",), "visual only: LSTM on globally average-pooled VGG-19 maps"),
    "V-att": (False, "att", ("audio", "visual"), "visual only, pooled by audio-guided attention"),
    "A+V": (True, "pool", ("audio", "visual"), "audio + pooled visual, fused (default: concat of LSTM outputs)"),
    "A+V-att": (True, "att", ("audio", "visual"), "audio + attended visual, fused (default: concat of LSTM outputs)"),
}


def _register(name: str, use_audio: bool, visual: str | None, inputs: tuple[str, ...], description: str) -> None:
    def build(cfg: ModelConfig) -> nn.Module:
        return Localizer(normalize_config(cfg), use_audio=use_audio, visual=visual)

    register_model(name, inputs=inputs, description=description)(build)


for _name, (_audio, _visual, _inputs, _desc) in TABLE1_MODELS.items():
    _register(_name, _audio, _visual, _inputs, _desc)

# Models whose definition fixes some config fields: what DMRN means in the paper, and the
# single-stream models, which fuse nothing (a fusion setting for them would be silently ignored).
_DEFAULT = ModelConfig()
FIXED_FIELDS: dict[str, dict[str, str | int]] = {
    "DMRN": {"fusion": "dmrn", "fusion_stage": "late"},
    **{name: {"fusion": _DEFAULT.fusion, "fusion_stage": _DEFAULT.fusion_stage,
              "fusion_blocks": _DEFAULT.fusion_blocks}
       for name, (audio, visual, _, _) in TABLE1_MODELS.items() if not (audio and visual)},
}


def normalize_config(cfg: ModelConfig) -> ModelConfig:
    """Fill the fields a model's definition fixes (DMRN: fusion dmrn, late; A, V, V-att: no fusion);
    refuse conflicting values.

    A field left at its ModelConfig default is replaced; any other value that disagrees is an error.
    """
    changes = {}
    for field_name, value in FIXED_FIELDS.get(cfg.name, {}).items():
        current = getattr(cfg, field_name)
        if current not in (value, getattr(_DEFAULT, field_name)):
            raise AvelError(f"{cfg.name} fixes {field_name} to '{value}' (got '{current}'); "
                            f"use A+V-att to choose {field_name}")
        changes[field_name] = value
    return dataclasses.replace(cfg, **changes)


@register_model("DMRN", inputs=("audio", "visual"),
                description="A+V-att with the dual multimodal residual fusion (eqs. 5-6) after the LSTMs")
def dmrn(cfg: ModelConfig) -> nn.Module:
    """A+V-att with late fusion by one DMRN block (see FIXED_FIELDS / normalize_config)."""
    return Localizer(normalize_config(cfg), use_audio=True, visual="att")
