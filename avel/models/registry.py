"""A small model registry (in the spirit of timm's `register_model` / `create_model`).

Each model is one small function `fn(cfg: ModelConfig) -> nn.Module` decorated with
`@register_model("NAME")`, using the paper's names (`A`, `V`, `V-att`, `A+V`, `A+V-att`, `DMRN`, ...).
Every registered model takes a batch of per-second features and returns a `ModelOutput`; a model
whose method trains with its own objective also defines `method_loss(out, target, weak)` (used by
the trainer in place of TrainConfig.loss);
tests/test_registry.py loops over `list_models()` doing forward, backward, shape and NaN checks,
so a new model is tested the moment it is registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from avel.errors import AvelError, dataclass_from_dict


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored as JSON beside every checkpoint."""

    name: str = "A+V-att"  # registry name (the paper's model name)
    num_classes: int = 29  # 28 events + background
    audio_dim: int = 128  # VGGish embedding size
    visual_dim: int = 512  # VGG-19 pool5 channels
    visual_grid: int = 7  # pool5 map is visual_grid x visual_grid
    hidden: int = 128  # LSTM hidden size (supplement Sec. 2)
    bidirectional: bool = True  # the authors' released code uses BiLSTMs
    attention_dim: int = 512  # d, the shared projection size in eq. 4 (U_v, U_a)
    fusion: str = "concat"  # fusion method name (see avel.models.fusion.FUSIONS)
    fusion_stage: str = "late"  # early (before LSTMs) | late (after LSTMs) | decision (before softmax)
    fusion_blocks: int = 1  # residual blocks stacked in DMRN / MRN fusion (Sec. 4.3; the paper uses 1)
    dropout: float = 0.0  # dropout on LSTM outputs
    weak: bool = False  # trained from video-level labels with MIL pooling (eq. 7)
    audio_map_shape: tuple[int, int, int] | None = None  # (H, W, C) of spatial audio maps (supplement 3.2)
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific options

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Any = None) -> "ModelConfig":
        """From stored JSON: every field's type and range checked, errors naming `path`."""
        return dataclass_from_dict(cls, d, "model config", path)

    def validate(self) -> None:
        """Ranges a model can be built with (types are checked by from_dict)."""
        sizes = {"num_classes": self.num_classes, "audio_dim": self.audio_dim, "visual_dim": self.visual_dim,
                 "visual_grid": self.visual_grid, "hidden": self.hidden, "attention_dim": self.attention_dim}
        bad = [f"{k}={v} (must be >= 1)" for k, v in sizes.items() if v < 1]
        if not 0.0 <= self.dropout < 1.0:
            bad.append(f"dropout={self.dropout} (must be in [0, 1))")
        if self.audio_map_shape is not None and min(self.audio_map_shape) < 1:
            bad.append(f"audio_map_shape={list(self.audio_map_shape)} (sizes must be >= 1)")
        if bad:
            raise AvelError(f"invalid model config: {', '.join(bad)}")


@dataclass
class ModelOutput:
    """What every localizer returns."""

    logits: torch.Tensor  # (B, T, num_classes) per-second class scores (pre-softmax)
    attention: torch.Tensor | None = None  # (B, T, grid*grid) audio-guided visual attention, rows sum to 1
    audio_attention: torch.Tensor | None = None  # (B, T, H*W) visual-guided audio attention, if any
    probs: torch.Tensor | None = None  # (B, T, num_classes) when a model averages probabilities (DMRFE)
    # Further tensors a model's own training objective reads (`method_loss`, see avel.train.trainer),
    # e.g. CMRAN's per-second event relevance (B, T) and video class scores (B, C-1).
    extras: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[ModelConfig], nn.Module]
    inputs: tuple[str, ...]  # batch keys the model reads: "audio", "visual", "audio_map"
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, inputs: tuple[str, ...] = ("audio", "visual"), description: str = ""):
    """Decorator: register `fn(cfg) -> nn.Module` under the paper's model name."""

    def deco(fn: Callable[[ModelConfig], nn.Module]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, fn, inputs, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def _load_builtin_models() -> None:
    # Importing the modules runs their @register_model decorators.
    import importlib

    for mod in ("localizers", "edtcn", "attention_variants", "authors", "cmran", "psp", "cmbs"):
        try:
            importlib.import_module(f"avel.models.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"avel.models.{mod}":
                raise


PAPER_MODELS = ("A", "V", "V-att", "A+V", "A+V-att", "DMRN")  # Table 1's names, listed first


def list_models() -> list[str]:
    """Registered names: Table 1's first, then the rest in registration order."""
    _load_builtin_models()
    return [n for n in PAPER_MODELS if n in _REGISTRY] + [n for n in _REGISTRY if n not in PAPER_MODELS]


def model_spec(name: str) -> ModelSpec:
    _load_builtin_models()
    if name not in _REGISTRY:
        raise AvelError(f"unknown model '{name}'; valid models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(cfg: ModelConfig) -> nn.Module:
    """Build the model named by `cfg.name`."""
    return model_spec(cfg.name).build(cfg)
