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

Speed: almost all the work is U_v on every region vector: with N = B*T*k region rows a training
step spends 2 x 2N*512*d FLOP on U_v (forward, weight gradient; autograd skips the gradient w.r.t.
the constant visual features) and 3 x 2N*d*k on W_v: ~37.6 GFLOP at batch 64, almost all in large
GEMMs (see benchmarks/bench_train_step.py). On CPU the module runs the same maths in cache-sized
chunks of seconds with a hand-written backward (avel.models.fused_attention), which keeps the
(N, d) intermediates other than the ReLU output out of main memory; `plain_forward` is the whole-batch formulation, used on
GPU and as the reference the tests compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avel.models.fused_attention import attention_forward


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
        self.fused = True  # on CPU, compute in cache-sized chunks (avel.models.fused_attention); same maths

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, T, Da), visual (B, T, H, W, Dv) or (B, T, k, Dv) -> context (B, T, Dv), weights (B, T, k)."""
        B, T = audio.shape[:2]
        regions = visual.reshape(B * T, -1, visual.shape[-1])  # (B*T, k, Dv)
        if regions.shape[1] != self.k:
            raise ValueError(f"attention built for {self.k} regions, got {regions.shape[1]}")
        x_a = self.W_a(F.relu(self.U_a(audio))).reshape(B * T, -1)  # (B*T, k hidden)
        if self.fused and regions.device.type == "cpu" and regions.dtype == self.U_v.weight.dtype:
            context, weights = attention_forward(regions, x_a, self.U_v.weight, self.U_v.bias, self.W_v.weight,
                                                 self.W_f.weight)
        else:
            context, weights = self.plain_forward(regions, x_a)
        return context.view(B, T, -1), weights.view(B, T, -1)

    def plain_forward(self, regions: torch.Tensor, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. 2-4 as whole-batch tensor operations: regions (S, k, Dv), x_a (S, kh) -> (S, Dv), (S, k)."""
        S, k, Dv = regions.shape
        hidden = F.relu(self.U_v(regions.reshape(S * k, Dv)), inplace=True)  # (S*k, d): one big GEMM
        x_v = self.W_v(hidden).view(S, k, -1)  # (S, regions, k hidden)
        z = torch.tanh(x_v + x_a.unsqueeze(1))  # (S, regions, k): audio term broadcast over regions (1^T)
        weights = torch.softmax(self.W_f(z).squeeze(-1), dim=-1)  # (S, k), eq. 3
        context = torch.bmm(weights.unsqueeze(1), regions).squeeze(1)  # (S, Dv), eq. 2
        return context, weights
