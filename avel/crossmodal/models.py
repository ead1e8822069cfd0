"""Cross-modal matching networks (Section 5): AVDLN and the DCCA baseline.

Both map a 1-s audio feature (VGGish, 128-d) and a 1-s visual feature (globally pooled VGG-19
pool5, 512-d) into one shared space and measure their Euclidean distance there; the sliding-window
localizer (avel.crossmodal.localize) only needs that distance. They differ in how they are trained:
AVDLN with the contrastive loss on matched/mismatched pairs (eq. 10), DCCA by maximising the
canonical correlation of its two outputs (Andrew et al. 2013), followed by a linear CCA projection.

The branch shapes follow the authors' released Keras model (cmm_train.py, `scmm_net`):
visual 512 -> Dense 128 -> LeakyReLU(0.3) -> Dense 64, audio 128 -> Dense 128 -> LeakyReLU(0.3)
-> Dense 64, and the distance of their Lambda layer, sqrt(max(sum((v - a)^2), K.epsilon())).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from avel.errors import AvelError, dataclass_from_dict

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), the floor under the squared distance
KERAS_LEAKY_ALPHA = 0.3  # keras.layers.LeakyReLU default alpha, as used by the authors


@dataclass
class CrossModalConfig:
    """Everything needed to rebuild a cross-modal network; stored as JSON beside its weights."""

    method: str = "avdln"  # "avdln" (contrastive distance learning) or "dcca" (deep CCA baseline)
    audio_dim: int = 128  # input size of the audio branch (VGGish embedding)
    visual_dim: int = 512  # input size of the visual branch (globally pooled VGG-19 pool5)
    audio_hidden: int = 128  # width of the audio branch's first Dense layer (authors: 128)
    visual_hidden: int = 128  # width of the visual branch's first Dense layer (authors: 128)
    embed_dim: int = 64  # output size of each branch, R^a and R^v (authors: 64)
    leaky_slope: float = KERAS_LEAKY_ALPHA  # negative slope of the LeakyReLU between the two layers
    distance_eps: float = KERAS_EPSILON  # D = sqrt(max(||R^v - R^a||^2, eps)), as the Keras Lambda layer
    cca_dim: int = 16  # DCCA only: canonical components trained and kept for the shared space (<= embed_dim)
    cca_reg: float = 1e-3  # DCCA only: ridge r added to both covariance diagonals (Andrew et al.'s r1, r2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Any = None) -> "CrossModalConfig":
        """From stored JSON: every field's type checked, then `validate`; errors name `path`."""
        return dataclass_from_dict(cls, d, "cross-modal config", path)

    def validate(self, path: Any = None) -> None:
        if self.method not in METHODS:
            raise AvelError(f"unknown cross-modal method '{self.method}'; valid: {', '.join(METHODS)}", path)
        if self.method == "dcca" and not 0 < self.cca_dim <= self.embed_dim:
            raise AvelError(f"cca_dim must be in 1..embed_dim={self.embed_dim}, got {self.cca_dim}", path)
        sizes = ("audio_dim", "visual_dim", "audio_hidden", "visual_hidden", "embed_dim")
        bad = [f"{k}={getattr(self, k)}" for k in sizes if getattr(self, k) < 1]
        bad += [f"{k}={getattr(self, k)}" for k in ("distance_eps", "cca_reg") if getattr(self, k) < 0]
        if bad:
            raise AvelError(f"invalid cross-modal config: {', '.join(bad)}", path)


def branch(in_dim: int, hidden: int, out_dim: int, slope: float) -> nn.Sequential:
    """Dense -> LeakyReLU -> Dense, the two-layer FC branch of `scmm_net`."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(slope), nn.Linear(hidden, out_dim))


def euclidean_distance(rv: torch.Tensor, ra: torch.Tensor, eps: float = KERAS_EPSILON) -> torch.Tensor:
    """sqrt(max(sum((rv - ra)^2, -1), eps)): the authors' Lambda layer; broadcasts over leading dims."""
    return torch.sqrt(torch.clamp((rv - ra).square().sum(-1), min=eps))


class CrossModalNet(nn.Module):
    """Shared interface: embed each modality, then a Euclidean distance in the shared space."""

    cfg: CrossModalConfig

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:  # (..., audio_dim) -> (..., D)
        raise NotImplementedError

    def embed_visual(self, visual: torch.Tensor) -> torch.Tensor:  # (..., visual_dim) -> (..., D)
        raise NotImplementedError

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Distance of paired segments: audio (..., 128), visual (..., 512) -> (...,)."""
        return euclidean_distance(self.embed_visual(visual), self.embed_audio(audio), self.cfg.distance_eps)

    def distance_matrix(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """All-pairs distances within each video: audio (B, T, 128), visual (B, T, 512) -> (B, T_v, T_a).

        Entry [b, i, j] is D(V_i, A_j), the distance between visual second i and audio second j.
        """
        ra = self.embed_audio(audio)  # (B, T, D)
        rv = self.embed_visual(visual)  # (B, T, D)
        return euclidean_distance(rv[:, :, None, :], ra[:, None, :, :], self.cfg.distance_eps)  # (B, T, T)


class AVDLN(CrossModalNet):
    """Audio-visual distance learning network (Fig. 3b): two FC branches, Euclidean distance (eq. 9)."""

    def __init__(self, cfg: CrossModalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = branch(cfg.visual_dim, cfg.visual_hidden, cfg.embed_dim, cfg.leaky_slope)
        self.audio = branch(cfg.audio_dim, cfg.audio_hidden, cfg.embed_dim, cfg.leaky_slope)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.audio(audio)  # (..., embed_dim)

    def embed_visual(self, visual: torch.Tensor) -> torch.Tensor:
        return self.visual(visual)  # (..., embed_dim)


class DCCA(CrossModalNet):
    """Deep CCA (Andrew et al. 2013): two branches trained to maximise canonical correlation.

    After training, `fit_projection` stores the linear CCA of the branch outputs (means and the
    projections to the top `cca_dim` canonical directions, whitened) as buffers, so a checkpoint
    holds the whole model. The shared space is those canonical variates; distance is Euclidean.
    """

    def __init__(self, cfg: CrossModalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = branch(cfg.visual_dim, cfg.visual_hidden, cfg.embed_dim, cfg.leaky_slope)
        self.audio = branch(cfg.audio_dim, cfg.audio_hidden, cfg.embed_dim, cfg.leaky_slope)
        eye = torch.eye(cfg.embed_dim)[:, : cfg.cca_dim]
        self.register_buffer("audio_mean", torch.zeros(cfg.embed_dim))  # (embed_dim,)
        self.register_buffer("visual_mean", torch.zeros(cfg.embed_dim))  # (embed_dim,)
        self.register_buffer("audio_proj", eye.clone())  # (embed_dim, cca_dim)
        self.register_buffer("visual_proj", eye.clone())  # (embed_dim, cca_dim)
        self.register_buffer("correlations", torch.zeros(cfg.cca_dim))  # (cca_dim,) canonical correlations

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return (self.audio(audio) - self.audio_mean) @ self.audio_proj  # (..., cca_dim)

    def embed_visual(self, visual: torch.Tensor) -> torch.Tensor:
        return (self.visual(visual) - self.visual_mean) @ self.visual_proj  # (..., cca_dim)

    @torch.no_grad()
    def fit_projection(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Fit the linear CCA on paired inputs audio (N, 128), visual (N, 512); returns the correlations."""
        from avel.crossmodal.losses import cca_projection

        ha, hv = self.audio(audio), self.visual(visual)  # (N, embed_dim) each
        mean_a, proj_a, mean_v, proj_v, corr = cca_projection(ha, hv, self.cfg.cca_dim, self.cfg.cca_reg)
        self.audio_mean.copy_(mean_a)
        self.audio_proj.copy_(proj_a)
        self.visual_mean.copy_(mean_v)
        self.visual_proj.copy_(proj_v)
        self.correlations.copy_(corr)
        return corr


METHODS: dict[str, Callable[[CrossModalConfig], CrossModalNet]] = {"avdln": AVDLN, "dcca": DCCA}


def build_model(cfg: CrossModalConfig) -> CrossModalNet:
    """Build the network named by `cfg.method`."""
    cfg.validate()
    return METHODS[cfg.method](cfg)
