"""Audio-guided visual attention (Section 4.2, eqs. 2-4).

For every second t the audio feature a_t selects which of the k = 7x7 regions of the visual map
v_t = [v_t^1 .. v_t^k] to look at:

    x_t = W_f tanh(W_v U_v(v_t) + (W_a U_a(a_t)) 1^T)          (4)   x_t in R^k (one score per region)
    w_t = softmax(x_t)                                          (3)
    v_t^att = sum_i w_t^i v_t^i                                 (2)

U_v, U_a are dense layers with a ReLU projecting to d (512); W_v, W_a map d -> k (49); W_f maps
k -> 1. In eq. 4 the audio term is broadcast over the *regions* (the 1^T), so region i is scored by
w_f . tanh(W_v U_v(v^i) + W_a U_a(a)) -- additive attention with hidden size k. (The authors'
released code broadcasts the audio vector over the hidden units instead, which makes audio add a
fixed per-position bias; we follow the paper's equation.)

Speed: almost all the work is U_v on every region vector, so all B*T*k regions go through U_v as
ONE (B*T*k, 512) x (512, d) matrix product (no per-second loops), followed by one (.., d) x (d, k)
product; the ReLU runs in place. Autograd skips the gradient w.r.t. the constant visual features,
so with N = B*T*k a training step spends 2 x 2N*512*d FLOP on U_v (forward, weight gradient) and
3 x 2N*d*k on W_v: ~37.6 GFLOP at batch 64, almost all of it in large GEMMs (see benchmarks/bench_train_step.py).
(A hand-written autograd function for U_v/W_v was tried: no faster than this.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AudioGuidedAttention(nn.Module):
    """Eqs. 2-4: attention weights over the k visual regions, guided by the audio feature."""

    def __init__(self, audio_dim: int = 128, visual_dim: int = 512, d: int = 512, k: int = 49) -> None:
        super().__init__()
        self.k = k
        self.U_a = nn.Linear(audio_dim, d)  # audio -> d, followed by ReLU
        self.U_v = nn.Linear(visual_dim, d)  # every region vector -> d, followed by ReLU
        self.W_a = nn.Linear(d, k, bias=False)
        self.W_v = nn.Linear(d, k, bias=False)
        self.W_f = nn.Linear(k, 1, bias=False)
        for lin in (self.U_a, self.U_v, self.W_a, self.W_v, self.W_f):
            nn.init.xavier_uniform_(lin.weight)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, T, Da), visual (B, T, H, W, Dv) or (B, T, k, Dv) -> context (B, T, Dv), weights (B, T, k)."""
        B, T = audio.shape[:2]
        regions = visual.reshape(B, T, -1, visual.shape[-1])  # (B, T, k, Dv)
        if regions.shape[2] != self.k:
            raise ValueError(f"attention built for {self.k} regions, got {regions.shape[2]}")
        flat = regions.reshape(-1, regions.shape[-1])  # (B*T*k, Dv): one big GEMM
        hidden = F.relu(self.U_v(flat), inplace=True)  # (B*T*k, d); in place: addmm's backward does not need its output
        x_v = self.W_v(hidden)  # (B*T*k, k)
        x_v = x_v.view(B, T, self.k, self.k)  # (B, T, regions, k hidden)
        x_a = self.W_a(F.relu(self.U_a(audio)))  # (B, T, k hidden)
        z = torch.tanh(x_v + x_a.unsqueeze(2))  # (B, T, regions, k): audio term broadcast over regions (1^T)
        scores = self.W_f(z).squeeze(-1)  # (B, T, k)
        weights = torch.softmax(scores, dim=-1)  # (B, T, k), eq. 3
        context = torch.matmul(weights.unsqueeze(-2), regions).squeeze(-2)  # (B, T, Dv), eq. 2
        return context, weights
