"""Training losses, supervised (per second) and weakly supervised (MIL average pooling, eq. 7).

Each loss is `fn(logits (B,T,C), target, weak) -> scalar`, where target is the per-second one-hot
labels (B,T,C) for supervised models and the video-level one-hot (B,C) for weak ones.

"ce" (default): cross-entropy on logits: per second (supervised) or on the video-level score
    m_hat = mean_t m_t of eq. 7 (weak).
"authors": the released code's MultiLabelSoftMarginLoss applied to softmax outputs (a sigmoid on
    top of a softmax: weak gradients, kept for comparison); weak: on softmax(mean_t m_t).
"authors-max": as "authors", but weak models max-pool the per-second scores over time before the
    softmax, as the authors' weakly-supervised network does (models_weakly.py, MaxPool1d over the 10
    seconds); supervised models are unchanged. The weak "authors" recipe uses it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def mil_pool(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7: video-level scores as the average of the per-second FC outputs. (B,T,C) -> (B,C)."""
    return logits.mean(dim=1)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weak: bool) -> torch.Tensor:
    C = logits.shape[-1]
    if weak:
        return F.cross_entropy(mil_pool(logits), target.argmax(-1))
    return F.cross_entropy(logits.reshape(-1, C), target.reshape(-1, C).argmax(-1))


def authors_loss(logits: torch.Tensor, target: torch.Tensor, weak: bool) -> torch.Tensor:
    C = logits.shape[-1]
    scores = mil_pool(logits) if weak else logits.reshape(-1, C)
    return F.multilabel_soft_margin_loss(torch.softmax(scores, dim=-1), target.reshape(-1, C))


def authors_max_loss(logits: torch.Tensor, target: torch.Tensor, weak: bool) -> torch.Tensor:
    if not weak:
        return authors_loss(logits, target, weak)
    return F.multilabel_soft_margin_loss(torch.softmax(logits.amax(dim=1), dim=-1), target)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]] = {
    "ce": cross_entropy,
    "authors": authors_loss,
    "authors-max": authors_max_loss,
}
