"""Training losses, supervised (per second) and weakly supervised (MIL average pooling, eq. 7).

A model whose method defines its own training objective (CMRAN, PSP, CMBS: relevance and class
terms, PSP's AVPS term, CMBS's background-suppression terms) implements
`method_loss(out: ModelOutput, target, weak) -> scalar`; `batch_loss` then uses it in place of the
configured loss, so that every method's losses live with its model and the trainer has one hook.

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
from typing import Any

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


def has_method_loss(model: Any) -> bool:
    """Whether `model` trains with its own objective (`method_loss`)."""
    return callable(getattr(model, "method_loss", None))


def batch_loss(model: Any, out: Any, target: torch.Tensor, weak: bool,
               loss_fn: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]) -> torch.Tensor:
    """One batch's loss: `model.method_loss(out, target, weak)` where the model defines it, else
    `loss_fn(out.logits, target, weak)` (`model`: the bare module, not a DDP wrapper)."""
    if has_method_loss(model):
        return model.method_loss(out, target, weak)
    return loss_fn(out.logits.float(), target, weak)
