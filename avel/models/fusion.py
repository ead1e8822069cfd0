"""Audio-visual fusion methods (Section 4.3, Section 6.2 and Table 2), behind one small interface.

A fusion module is built as `cls(dim_a, dim_v, out_dim)` and maps `(a (..., dim_a), v (..., dim_v))`
to a joint representation `(..., module.out_dim)`. The same modules serve early fusion (the 128-d
audio feature with the 512-d attended visual feature, before the LSTMs), late fusion (the two 256-d
BiLSTM outputs) and decision fusion (two 29-d class-score vectors, just before the softmax), so
every method accepts `dim_a != dim_v`.

`out_dim` is the joint size the caller asks for. Methods whose definition needs equal sizes
(additive, max-pooling, gated, DMRN, ...) first bring each modality to `out_dim` with a linear
projection, skipped (identity) when the modality already has that size: fusing two 256-d LSTM
outputs with `out_dim=256` is then exactly the textbook formula. Concatenation's size is fixed by
its definition (`dim_a + dim_v`), so it ignores `out_dim`; read `module.out_dim` for the real size.

Register new ones with `@register_fusion("name")`; `create_fusion(name, ...)` builds by name.

A fusion whose output is confined to a small range (`bounded = True`: GMU and DMRN end in tanh, so
every output lies in [-1, 1]) cannot feed a softmax directly: over 29 classes no class can then
exceed e / (e + 28 / e) = 0.21 probability. Decision fusion follows such a fusion with a learned
linear read-out (avel.models.localizers.DecisionFusion); see docs/models.md.

`blocks` (ModelConfig.fusion_blocks, `--fusion-blocks N`) stacks the residual block of the fusions
that have one (`BLOCK_FUSIONS`: DMRN, MRN) N times (Sec. 4.3); the other fusions accept only 1.

The one Table 2 entry that is a model rather than a fusion operator, DMRFE (late fusion only),
is registered here too, as the model "DMRFE", beside the DMRN block it ensembles.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from avel.errors import AvelError
from avel.models.attention import AudioGuidedAttention
from avel.models.parts import Head, Temporal
from avel.models.registry import ModelConfig, ModelOutput, register_model

FUSIONS: dict[str, type[nn.Module]] = {}


def register_fusion(name: str):
    """Decorator: register a fusion module class under `name` (lower case, as in the CLI)."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in FUSIONS:
            raise ValueError(f"fusion {name!r} registered twice")
        FUSIONS[name] = cls
        return cls

    return deco


# Fusions built from a repeatable residual block: their constructor takes `blocks`.
BLOCK_FUSIONS = ("mrn", "dmrn")


def create_fusion(name: str, dim_a: int, dim_v: int, out_dim: int, blocks: int = 1) -> nn.Module:
    """Build the fusion module registered as `name`, with `blocks` residual blocks where it has them."""
    if name not in FUSIONS:
        raise AvelError(f"unknown fusion '{name}'; valid: {', '.join(FUSIONS)}")
    if blocks < 1:
        raise AvelError(f"fusion blocks must be at least 1, got {blocks}")
    if name in BLOCK_FUSIONS:
        return FUSIONS[name](dim_a, dim_v, out_dim, blocks=blocks)
    if blocks != 1:
        raise AvelError(f"fusion '{name}' has no residual block to repeat (--fusion-blocks {blocks}); "
                        f"only {', '.join(BLOCK_FUSIONS)} stack blocks")
    return FUSIONS[name](dim_a, dim_v, out_dim)


def project(dim_in: int, dim_out: int) -> nn.Module:
    """Linear map to `dim_out`, or the identity when the size already matches."""
    return nn.Identity() if dim_in == dim_out else nn.Linear(dim_in, dim_out)


def _two_layer(dim: int) -> nn.Sequential:
    """Linear-tanh-Linear transform, the U_a / U_v of the authors' TBMRF_Net."""
    return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))


# Registration order = Table 2's column order: Additive MP Gated MB GMU GMB Concat MRN DMRN.

# --- Kiela et al. 2018 (and GMU, Arevalo et al. 2017, which Table 2 places between MB and GMB) -
# D. Kiela, E. Grave, A. Joulin, T. Mikolov, "Efficient Large-Scale Multi-Modal Classification",
# AAAI 2018 (arXiv:1802.02892), ref. [36] of the paper. There one modality (text) is fused with
# continuous image features that are first linearly projected to the text size; here both audio
# and visual are projected to `out_dim` where their size differs. The paper's text was not
# available while writing this; the formulas are the standard forms the method names denote
# (see docs/models.md), with the audio in the role of the primary modality.


@register_fusion("additive")
class Additive(nn.Module):
    """Additive fusion (Kiela et al. 2018): z = P_a a + P_v v.

    P_a, P_v project to `out_dim` (identity where the size already matches), so two equal-size
    LSTM outputs are simply summed.
    """

    def __init__(self, dim_a: int, dim_v: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.P_a = project(dim_a, out_dim)
        self.P_v = project(dim_v, out_dim)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.P_a(a) + self.P_v(v)  # (..., out_dim)


@register_fusion("mp")
class MaxPooling(nn.Module):
    """Max-pooling fusion (Kiela et al. 2018): z = max(P_a a, P_v v), elementwise."""

    def __init__(self, dim_a: int, dim_v: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.P_a = project(dim_a, out_dim)
        self.P_v = project(dim_v, out_dim)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.maximum(self.P_a(a), self.P_v(v))  # (..., out_dim)


@register_fusion("gated")
class Gated(nn.Module):
    """Gated fusion (Kiela et al. 2018): z = sigmoid(W_g a + b_g) * P_v v.

    One modality produces an elementwise sigmoid gate that switches the other's features on and
    off. The audio is the gating modality, as it guides the visual stream everywhere else in
    the paper (the audio-guided attention of eq. 2-4).
    """

    def __init__(self, dim_a: int, dim_v: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.gate = nn.Linear(dim_a, out_dim)  # W_g, b_g
        self.P_v = project(dim_v, out_dim)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(a)) * self.P_v(v)  # (..., out_dim)


@register_fusion("mb")
class MultimodalBilinear(nn.Module):
    """Multimodal bilinear fusion (Kiela et al. 2018): z_k = a^T W_k v + b_k.

    A full bilinear tensor W (out_dim x dim_a x dim_v) would hold 16.8 M weights for late fusion
    (256 x 256 x 256), so W is factorised with rank R (default `min(out_dim, 256)`):
    W_k = sum_r P[k, r] U[r]^T V[r], i.e. z = P ((U a) * (V v)) + b (the low-rank bilinear form
    of Kim et al., "Hadamard Product for Low-rank Bilinear Pooling", ICLR 2017, without its
    nonlinearities, so z stays exactly bilinear in (a, v)). Parameters: R (dim_a + dim_v +
    out_dim) + out_dim, i.e. 197k for late fusion.
    """

    def __init__(self, dim_a: int, dim_v: int, out_dim: int, rank: int | None = None) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.rank = rank or min(out_dim, 256)
        self.U = nn.Linear(dim_a, self.rank, bias=False)
        self.V = nn.Linear(dim_v, self.rank, bias=False)
        self.P = nn.Linear(self.rank, out_dim)

    def full_tensor(self) -> torch.Tensor:
        """The equivalent full bilinear tensor W (out_dim, dim_a, dim_v), for tests and inspection."""
        return torch.einsum("kr,ra,rv->kav", self.P.weight, self.U.weight, self.V.weight)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.P(self.U(a) * self.V(v))  # (..., R) * (..., R) -> (..., out_dim)


@register_fusion("gmu")
class GMU(nn.Module):
    """Gated Multimodal Unit (Arevalo et al., "Gated Multimodal Units for Information Fusion",
    ICLR 2017 workshop; ref. [56] of the paper):

    h_a = tanh(W_a a), h_v = tanh(W_v v), z = sigmoid(W_z [a; v]), h = z * h_a + (1 - z) * h_v.
    The gate z decides, per output unit, how much each modality contributes.
    h lies in [-1, 1] (`bounded`): decision fusion adds a linear read-out after it.
    """

    bounded = True  # output confined to [-1, 1]

    def __init__(self, dim_a: int, dim_v: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.W_a = nn.Linear(dim_a, out_dim, bias=False)
        self.W_v = nn.Linear(dim_v, out_dim, bias=False)
        self.W_z = nn.Linear(dim_a + dim_v, out_dim, bias=False)

    def parts(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h_a, h_v, z), each (..., out_dim)."""
        h_a = torch.tanh(self.W_a(a))
        h_v = torch.tanh(self.W_v(v))
        z = torch.sigmoid(self.W_z(torch.cat([a, v], dim=-1)))
        return h_a, h_v, z

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h_a, h_v, z = self.parts(a, v)
        return z * h_a + (1.0 - z) * h_v  # (..., out_dim)


@register_fusion("gmb")
class GatedMultimodalBilinear(nn.Module):
    """Gated multimodal bilinear fusion (Kiela et al. 2018).

    The gated variant of `mb`: z = sigmoid(W_g a + b_g) * MB(a, v), the audio gate of `gated`
    applied to the low-rank bilinear joint representation.
    """

    def __init__(self, dim_a: int, dim_v: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.gate = nn.Linear(dim_a, out_dim)
        self.bilinear = MultimodalBilinear(dim_a, dim_v, out_dim)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(a)) * self.bilinear(a, v)  # (..., out_dim)


# --- other fusions of Table 2 ------------------------------------------------------------------


@register_fusion("concat")
class Concat(nn.Module):
    """Concatenation: [a; v] (the fusion of the paper's Table 1 A+V models); ignores out_dim."""

    def __init__(self, dim_a: int, dim_v: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = dim_a + dim_v

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, v], dim=-1)  # (..., dim_a + dim_v)


@register_fusion("mrn")
class MRN(nn.Module):
    """Multimodal Residual Network (Kim et al., "Multimodal Residual Learning for Visual QA",
    NIPS 2016; ref. [47] of the paper), adapted from question/image to audio/visual.

    Only the audio branch is updated; each block adds the product of a nonlinear audio mapping
    and a nonlinear mapping of the (un-updated) visual feature to a linear shortcut of the audio:

        H_0 = a,  H_l = W_s^l H_{l-1} + F_l(H_{l-1}, v),
        F_l(h, v) = tanh(W_2^l tanh(W_1^l h)) * tanh(W_4^l tanh(W_3^l v)).

    Kim et al. use a linear shortcut W_s (identity shortcuts did worse, and here it also maps
    `dim_a` to `out_dim`). One block by default: the paper found stacking does not help (Sec. 4.3).
    """

    def __init__(self, dim_a: int, dim_v: int, out_dim: int, blocks: int = 1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.shortcut = nn.ModuleList()
        self.audio_map = nn.ModuleList()
        self.visual_map = nn.ModuleList()
        for i in range(blocks):
            d_in = dim_a if i == 0 else out_dim
            self.shortcut.append(nn.Linear(d_in, out_dim, bias=False))  # W_s
            self.audio_map.append(nn.Sequential(nn.Linear(d_in, out_dim), nn.Tanh(), nn.Linear(out_dim, out_dim), nn.Tanh()))
            self.visual_map.append(nn.Sequential(nn.Linear(dim_v, out_dim), nn.Tanh(), nn.Linear(out_dim, out_dim), nn.Tanh()))

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = a
        for shortcut, f_a, f_v in zip(self.shortcut, self.audio_map, self.visual_map):
            h = shortcut(h) + f_a(h) * f_v(v)  # (..., out_dim)
        return h


@register_fusion("dmrn")
class DMRN(nn.Module):
    """Dual Multimodal Residual Network (eqs. 5-6), following the authors' `TBMRF_Net`.

    f(h_a, h_v) = (U_a(h_a) + U_v(h_v)) / 2 (additive fusion, U = Linear-tanh-Linear),
    h_a' = tanh(h_a + f), h_v' = tanh(h_v + f) (eqs. 5-6), joint h* = (h_a' + h_v') / 2.
    Unlike MRN both branches are updated. Inputs of another size than `out_dim` are first
    projected to it (the paper fuses equal-size LSTM outputs, where this is the identity).
    `blocks` > 1 stacks blocks on the updated (h_a', h_v'); the paper uses one.
    h* lies in [-1, 1] (`bounded`): decision fusion adds a linear read-out after it.
    """

    bounded = True  # output confined to [-1, 1]

    def __init__(self, dim_a: int, dim_v: int, out_dim: int, blocks: int = 1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.P_a = project(dim_a, out_dim)
        self.P_v = project(dim_v, out_dim)
        self.U_a = nn.ModuleList([_two_layer(out_dim) for _ in range(blocks)])
        self.U_v = nn.ModuleList([_two_layer(out_dim) for _ in range(blocks)])

    def branches(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The updated (h_a', h_v') after all blocks, each (..., out_dim)."""
        h_a, h_v = self.P_a(a), self.P_v(v)
        for U_a, U_v in zip(self.U_a, self.U_v):
            merged = 0.5 * (U_a(h_a) + U_v(h_v))  # f(h_a, h_v)
            h_a, h_v = torch.tanh(h_a + merged), torch.tanh(h_v + merged)  # eqs. 5, 6
        return h_a, h_v

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h_a, h_v = self.branches(a, v)
        return 0.5 * (h_a + h_v)  # joint representation h*_t


# --- DMRFE (Sec. 6.2), a model -----------------------------------------------------------------

DMRFE_MEMBERS = 2  # "two separated blocks"


def _dmrfe_config(cfg: ModelConfig) -> ModelConfig:
    """DMRFE is DMRN fusion after the LSTMs by definition: accept defaults or those values only."""
    defaults = ModelConfig()
    for field_name, value in (("fusion", "dmrn"), ("fusion_stage", "late")):
        current = getattr(cfg, field_name)
        if current not in (value, getattr(defaults, field_name)):
            raise AvelError(f"DMRFE fixes {field_name} to '{value}' (got '{current}'): it exists only as late "
                            "DMRN fusion; use A+V-att with --fusion/--fusion-stage for other combinations")
    return dataclasses.replace(cfg, fusion="dmrn", fusion_stage="late")


class DMRFE(nn.Module):
    """Dual multimodal residual fusion ensemble (Sec. 6.2; Table 2, late fusion only).

    The paper: DMRFE "feed[s] audio and visual features into two separated blocks and then use[s]
    average ensemble to combine the two predicted probabilities". Our reading: the audio and
    visual features are the two LSTM outputs of A+V-att (audio-guided attention, one BiLSTM per
    modality: "late only" means the fusion happens after the LSTMs); each of `members` (2)
    separately parameterised DMRN blocks fuses them and has its own per-second classifier, and
    the output is the average of the members' softmax probabilities. Attention and LSTMs are
    shared: the sentence ensembles blocks, not whole networks (an ensemble of two complete DMRN
    networks is just two DMRN runs averaged, which the reproduction could do without a model).
    `logits` = log of the averaged probabilities, so softmax(logits) = probs and the usual
    cross-entropy / MIL pooling apply unchanged.
    """

    def __init__(self, cfg: ModelConfig, members: int = DMRFE_MEMBERS) -> None:
        super().__init__()
        self.attention = AudioGuidedAttention(cfg.audio_dim, cfg.visual_dim, cfg.attention_dim, cfg.visual_grid ** 2)
        self.temporal_a = Temporal(cfg.audio_dim, cfg)
        self.temporal_v = Temporal(cfg.visual_dim, cfg)
        dim = self.temporal_a.out_dim
        self.blocks = nn.ModuleList(DMRN(dim, dim, dim, blocks=cfg.fusion_blocks) for _ in range(members))
        self.heads = nn.ModuleList(Head(dim, cfg.num_classes) for _ in range(members))

    def member_log_probs(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities (members, B, T, C) of every block, attention (B, T, k))."""
        v_att, attention = self.attention(audio, visual)  # (B, T, 512), (B, T, 49)
        h_a, h_v = self.temporal_a(audio), self.temporal_v(v_att)  # (B, T, 256) each
        logp = [F.log_softmax(head(block(h_a, h_v)), dim=-1) for block, head in zip(self.blocks, self.heads)]
        return torch.stack(logp), attention

    def forward(self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None,
                **_: torch.Tensor) -> ModelOutput:
        logp, attention = self.member_log_probs(audio, visual)
        logits = torch.logsumexp(logp, dim=0) - math.log(logp.shape[0])  # log mean_m p_m, (B, T, C)
        return ModelOutput(logits=logits, attention=attention, probs=logits.exp())


@register_model("DMRFE", inputs=("audio", "visual"),
                description="A+V-att with two DMRN blocks after the LSTMs whose probabilities are averaged")
def dmrfe(cfg: ModelConfig) -> nn.Module:
    """DMRFE (Sec. 6.2): an average ensemble of DMRN fusion blocks on shared attention + LSTMs."""
    return DMRFE(_dmrfe_config(cfg), members=int(cfg.extra.get("dmrfe_members", DMRFE_MEMBERS)))
