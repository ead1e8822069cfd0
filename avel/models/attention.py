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
product. `_ProjectRegions` does both with their backward in a hand-written autograd function that
reuses buffers in place: it skips the gradient w.r.t. the (constant) visual features, computes the
bias gradient without an extra pass, and never allocates more than one (B*T*k, d) temporary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ProjectRegions(torch.autograd.Function):
    """x = relu(v @ Wu^T + bu) @ Wv^T for a (N, Dv) batch of region vectors, memory-lean.

    Forward keeps only h = relu(...) (N, d) for backward. Backward:
      gWv = gx^T h;  gh = (gx Wv) * (h > 0);  gWu = gh^T v;  gbu = sum_rows gh;  gv only if needed.
    The (N, d) gradient buffer is written by one GEMM and masked in place.
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, w_u: torch.Tensor, b_u: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
        h = torch.addmm(b_u, v, w_u.t())  # (N, d)
        h.relu_()
        x = h @ w_v.t()  # (N, k)
        ctx.save_for_backward(v, w_u, h, w_v)
        return x

    @staticmethod
    def backward(ctx, gx: torch.Tensor):
        v, w_u, h, w_v = ctx.saved_tensors
        need_v, need_wu, need_bu, need_wv = ctx.needs_input_grad
        gx = gx.contiguous()
        g_wv = gx.t() @ h if need_wv else None  # (k, d)
        gh = gx @ w_v  # (N, d)
        gh.masked_fill_(h <= 0, 0.0)  # ReLU'
        g_wu = gh.t() @ v if need_wu else None  # (d, Dv)
        g_bu = gh.sum(0) if need_bu else None  # (d,)
        g_v = gh @ w_u if need_v else None  # (N, Dv), skipped for constant features
        return g_v, g_wu, g_bu, g_wv


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
        x_v = _ProjectRegions.apply(flat, self.U_v.weight, self.U_v.bias, self.W_v.weight)  # (B*T*k, k)
        x_v = x_v.view(B, T, self.k, self.k)  # (B, T, regions, k hidden)
        x_a = self.W_a(F.relu(self.U_a(audio)))  # (B, T, k hidden)
        z = torch.tanh(x_v + x_a.unsqueeze(2))  # (B, T, regions, k): audio term broadcast over regions (1^T)
        scores = self.W_f(z).squeeze(-1)  # (B, T, k)
        weights = torch.softmax(scores, dim=-1)  # (B, T, k), eq. 3
        context = torch.matmul(weights.unsqueeze(-2), regions).squeeze(-2)  # (B, T, Dv), eq. 2
        return context, weights
