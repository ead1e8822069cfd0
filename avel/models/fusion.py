"""Audio-visual fusion methods (Section 4.3, Table 2), behind one small interface.

A fusion module is built as `cls(dim_a, dim_v, out_dim)` and maps `(a (..., dim_a), v (..., dim_v))`
to a joint representation `(..., module.out_dim)`. The same modules serve early fusion (on the
audio feature and the attended visual feature, before the LSTMs), late fusion (on the two LSTM
outputs) and decision fusion (on per-modality class scores, just before the softmax).
Register new ones with `@register_fusion("name")`.
"""

from __future__ import annotations

import torch
from torch import nn

from avel.errors import AvelError

FUSIONS: dict[str, type[nn.Module]] = {}


def register_fusion(name: str):
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        FUSIONS[name] = cls
        return cls

    return deco


def create_fusion(name: str, dim_a: int, dim_v: int, out_dim: int) -> nn.Module:
    if name not in FUSIONS:
        raise AvelError(f"unknown fusion '{name}'; valid: {', '.join(FUSIONS)}")
    return FUSIONS[name](dim_a, dim_v, out_dim)


@register_fusion("concat")
class Concat(nn.Module):
    """Concatenation: [a; v] (the fusion of the paper's Table 1 A+V models)."""

    def __init__(self, dim_a: int, dim_v: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = dim_a + dim_v

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, v], dim=-1)


@register_fusion("dmrn")
class DMRN(nn.Module):
    """Dual Multimodal Residual Network, one block (eqs. 5-6).

    h_a' = tanh(h_a + f(h_a, h_v)), h_v' = tanh(h_v + f(h_a, h_v)), joint = (h_a' + h_v') / 2,
    with f the additive fusion f(h_a, h_v) = (U_a(h_a) + U_v(h_v)) / 2 and U_a, U_v two-layer
    Linear-tanh-Linear transforms, as in the authors' `TBMRF_Net`.
    """

    def __init__(self, dim_a: int, dim_v: int, out_dim: int) -> None:
        super().__init__()
        if dim_a != dim_v:
            raise ValueError(f"DMRN needs equal audio/visual sizes, got {dim_a} and {dim_v}")
        self.out_dim = dim_a
        self.U_a = nn.Sequential(nn.Linear(dim_a, dim_a), nn.Tanh(), nn.Linear(dim_a, dim_a))
        self.U_v = nn.Sequential(nn.Linear(dim_v, dim_v), nn.Tanh(), nn.Linear(dim_v, dim_v))

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        merged = 0.5 * (self.U_a(a) + self.U_v(v))  # f(h_a, h_v), additive
        a2 = torch.tanh(a + merged)  # eq. 5
        v2 = torch.tanh(v + merged)  # eq. 6
        return 0.5 * (a2 + v2)  # joint representation h*_t
