"""Training objectives: the contrastive loss (eq. 10) and the deep-CCA correlation objective."""

from __future__ import annotations

import torch

CONTRASTIVE_MARGIN = 2.0  # th in eq. 10 (supplement Sec. 2 and the authors' cmm_train.py)
EIG_FLOOR = 1e-12  # floor under covariance eigenvalues before taking inverse square roots


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float = CONTRASTIVE_MARGIN) -> torch.Tensor:
    """Hadsell et al.'s contrastive loss, mean over the batch (eq. 10).

    L = y D^2 + (1 - y) max(0, th - D)^2, with y = 1 for synchronized pairs.
    distance: (B,) distances; same: (B,) labels in {0, 1}.
    """
    same = same.to(distance.dtype)
    return (same * distance.square() + (1 - same) * torch.clamp(margin - distance, min=0).square()).mean()


def _covariances(h1: torch.Tensor, h2: torch.Tensor, reg: float) -> tuple[torch.Tensor, ...]:
    """Means and (regularised) covariances of paired samples h1 (N, o1), h2 (N, o2), in float64."""
    h1, h2 = h1.double(), h2.double()
    n = h1.shape[0]
    if n < 2:
        raise ValueError(f"CCA needs at least 2 paired samples, got {n}")
    m1, m2 = h1.mean(0), h2.mean(0)
    c1, c2 = h1 - m1, h2 - m2  # (N, o1), (N, o2)
    s11 = c1.T @ c1 / (n - 1) + reg * torch.eye(h1.shape[1], dtype=h1.dtype, device=h1.device)
    s22 = c2.T @ c2 / (n - 1) + reg * torch.eye(h2.shape[1], dtype=h2.dtype, device=h2.device)
    s12 = c1.T @ c2 / (n - 1)
    return m1, m2, s11, s22, s12


def _inv_sqrt(s: torch.Tensor) -> torch.Tensor:
    """S^{-1/2} of a symmetric positive definite matrix, through its eigendecomposition."""
    w, v = torch.linalg.eigh(s)
    return (v * torch.clamp(w, min=EIG_FLOOR).rsqrt()) @ v.T


def _whitened_cross(h1: torch.Tensor, h2: torch.Tensor, reg: float) -> tuple[torch.Tensor, ...]:
    m1, m2, s11, s22, s12 = _covariances(h1, h2, reg)
    w1, w2 = _inv_sqrt(s11), _inv_sqrt(s22)
    return m1, m2, w1, w2, w1 @ s12 @ w2  # T = S11^-1/2 S12 S22^-1/2


def cca_loss(h1: torch.Tensor, h2: torch.Tensor, k: int | None = None, reg: float = 1e-3) -> torch.Tensor:
    """Negative total canonical correlation of h1 (N, o1) and h2 (N, o2) (Andrew et al. 2013, eq. 10).

    The canonical correlations are the singular values of T = S11^{-1/2} S12 S22^{-1/2}; the loss
    is minus the sum of the top `k` (all when None). Computed in float64; `svdvals` has stable
    gradients even for repeated singular values.
    """
    t = _whitened_cross(h1, h2, reg)[-1]
    corr = torch.linalg.svdvals(t)  # descending
    return -(corr if k is None else corr[:k]).sum()


@torch.no_grad()
def cca_projection(h1: torch.Tensor, h2: torch.Tensor, k: int, reg: float = 1e-3) -> tuple[torch.Tensor, ...]:
    """Linear CCA of paired samples: (mean1, proj1 (o1, k), mean2, proj2 (o2, k), correlations (k,)).

    (h1 - mean1) @ proj1 and (h2 - mean2) @ proj2 are the top-k canonical variates: unit variance
    each (up to the ridge `reg`), pairwise correlations `correlations`, uncorrelated otherwise.
    Returned in h1's dtype.
    """
    m1, m2, w1, w2, t = _whitened_cross(h1, h2, reg)
    u, s, vh = torch.linalg.svd(t)
    p1 = w1 @ u[:, :k]  # (o1, k)
    p2 = w2 @ vh.T[:, :k]  # (o2, k)
    dt = h1.dtype
    return m1.to(dt), p1.to(dt), m2.to(dt), p2.to(dt), s[:k].to(dt)
