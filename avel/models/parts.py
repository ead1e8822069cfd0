"""Building blocks shared by the localizers and the fusion models: the per-stream LSTM and the
per-second classifier head (the authors' code: BiLSTM hidden 128; ReLU, FC 64, ReLU, FC C).

Kept apart so both avel.models.localizers and avel.models.fusion (DMRFE) import them from below.
"""

from __future__ import annotations

import torch
from torch import nn

from avel.models.registry import ModelConfig

HEAD_HIDDEN = 64  # hidden width of the per-second classifier (the authors' L1: 2*2*128 -> 64)


class Temporal(nn.Module):
    """LSTM over the seconds of a clip: (B, T, in_dim) -> (B, T, out_dim)."""

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, cfg.hidden, batch_first=True, bidirectional=cfg.bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_dim = cfg.hidden * (2 if cfg.bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (B, T, out_dim)
        return self.dropout(out)


class Head(nn.Module):
    """Per-second classifier shared over time: ReLU, FC(in, 64), ReLU, FC(64, C) -> class scores."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Linear(in_dim, HEAD_HIDDEN), nn.ReLU(),
                                 nn.Linear(HEAD_HIDDEN, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, T, C)
