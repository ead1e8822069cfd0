"""Eqs. 2-4 computed a few dozen seconds at a time, forward and backward, for speed on CPU.

`AudioGuidedAttention` written as plain tensor operations streams every (B*T*k, d) intermediate
through main memory: the ReLU output, its gradient, the masked gradient, the bias-gradient sum and
a transposed copy of the regions for the context's backward each cost a 64 MiB pass at batch 64.
Here the same maths runs over chunks of
whole seconds (all k regions of a second together, so the softmax stays inside a chunk) small
enough for the CPU cache: each chunk's intermediates are produced and consumed while cached, and
the regions are read once per pass. Only the ReLU output (needed for W_v's gradient and the ReLU
mask) and the small (N, k) tanh and softmax outputs are kept for the backward pass. Measured with
benchmarks/bench_train_step.py on an idle 2-core machine: inference 13-16% faster and without the
(N, d) activation; a training step within run-to-run noise of the plain formulation.

The result equals the plain formulation up to float rounding (tests/test_models.py compares
values and every gradient in float64). On GPU the plain formulation is used: cuBLAS does not need
the help.

Under CPU autocast (avel.precision: bf16 where the CPU multiplies bf16 fast) the matrix products
take bf16 operands, each chunk of regions cast as it is read, and the ReLU output is kept in bf16;
tanh, softmax, the attention-weighted sum's output and every gradient accumulator stay fp32.
Without autocast every cast is a no-op and the fp32 computation is unchanged.
"""

from __future__ import annotations

import contextlib

import torch

from avel.precision import lower_dtype

CHUNK_ROWS = 2048  # region rows (seconds x k) per chunk: ~4 MiB per (rows, 512) fp32 intermediate


def _seconds_per_chunk(k: int) -> int:
    return max(1, CHUNK_ROWS // k)


def attention_forward(regions: torch.Tensor, x_a: torch.Tensor, U_w: torch.Tensor, U_b: torch.Tensor,
                      W_v: torch.Tensor, w_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """regions (S, k, Dv), audio term x_a (S, kh) -> context (S, Dv), weights (S, k); differentiable.

    Under CPU autocast the products run in autocast's dtype (see the module docstring)."""
    mm_dtype = lower_dtype("cpu")
    with torch.autocast("cpu", enabled=False) if mm_dtype is not None else contextlib.nullcontext():
        x_a = x_a.to(regions.dtype)  # autocast made it bf16: the tanh argument is summed in fp32
        if torch.is_grad_enabled() and any(t.requires_grad for t in (regions, x_a, U_w, U_b, W_v, w_f)):
            return _FusedAttention.apply(regions, x_a, U_w, U_b, W_v, w_f, mm_dtype)
        return _forward(regions, x_a, U_w, U_b, W_v, w_f, keep=False, mm_dtype=mm_dtype)[:2]


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b, with acc fp32 whatever the operands' dtype."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(torch.mm(a, b).to(acc.dtype))


def _forward(regions, x_a, U_w, U_b, W_v, w_f, keep: bool, mm_dtype: torch.dtype | None = None):
    S, k, Dv = regions.shape
    d = U_w.shape[0]
    lp = mm_dtype or regions.dtype  # operand dtype of the products
    context = regions.new_empty(S, Dv)
    weights = regions.new_empty(S, k)
    hidden = regions.new_empty(S * k, d, dtype=lp) if keep else None  # (S*k, d): kept for the backward pass
    z_all = regions.new_empty(S, k, W_v.shape[0]) if keep else None  # (S, k, kh) tanh outputs
    step = _seconds_per_chunk(k)
    U_t, W_t, U_bias, w = U_w.t().to(lp), W_v.t().to(lp), U_b.to(lp), w_f.reshape(-1)
    for s in range(0, S, step):
        e = min(S, s + step)
        v3 = regions[s:e].to(lp)  # (n, k, Dv): this chunk's regions, cast while cached
        v = v3.reshape((e - s) * k, Dv)  # (n*k, Dv)
        h = hidden[s * k:e * k] if keep else None
        h = torch.addmm(U_bias, v, U_t, out=h) if h is not None else torch.addmm(U_bias, v, U_t)
        h.clamp_(min=0)  # U_v's ReLU, in place
        x_v = (h @ W_t).view(e - s, k, -1).to(regions.dtype)  # (n, k, kh)
        z = torch.tanh(x_v.add_(x_a[s:e, None, :]), out=z_all[s:e] if keep else x_v)  # eq. 4, audio broadcast over regions
        weights[s:e] = torch.softmax(z @ w, dim=-1)  # (n, k), eq. 3
        context[s:e] = torch.bmm(weights[s:e, None, :].to(lp), v3).squeeze(1)  # (n, Dv), eq. 2
    return context, weights, hidden, z_all


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, regions, x_a, U_w, U_b, W_v, w_f, mm_dtype):
        context, weights, hidden, z = _forward(regions, x_a, U_w, U_b, W_v, w_f, keep=True, mm_dtype=mm_dtype)
        ctx.save_for_backward(regions, U_w, W_v, w_f, weights, hidden, z)
        ctx.mm_dtype = mm_dtype
        return context, weights

    @staticmethod
    def backward(ctx, g_context, g_weights):
        regions, U_w, W_v, w_f, weights, hidden, z = ctx.saved_tensors
        S, k, Dv = regions.shape
        lp = ctx.mm_dtype or regions.dtype
        need_regions, need_xa = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_U, g_b = torch.zeros_like(U_w), U_w.new_zeros(U_w.shape[0])
        g_W, g_wf = torch.zeros_like(W_v), torch.zeros_like(w_f)
        g_xa = regions.new_empty(S, W_v.shape[0]) if need_xa else None
        g_regions = torch.empty_like(regions) if need_regions else None
        if g_context is None:
            g_context = regions.new_zeros(S, Dv)
        w = w_f.reshape(-1)
        U_l, W_l = U_w.to(lp), W_v.to(lp)
        step = _seconds_per_chunk(k)
        for s in range(0, S, step):
            e = min(S, s + step)
            n = e - s
            v3 = regions[s:e].to(lp)  # (n, k, Dv)
            v = v3.reshape(n * k, Dv)  # (n*k, Dv)
            h, zc, a, gc = hidden[s * k:e * k], z[s:e], weights[s:e], g_context[s:e]
            g_a = torch.bmm(gc[:, None, :].to(lp), v3.transpose(1, 2)).squeeze(1).to(a.dtype)  # (n, k): d context / d weights (row form: 10x faster than bmm(v3, gc))
            if g_weights is not None:
                g_a = g_a + g_weights[s:e]
            g_s = a * (g_a - (a * g_a).sum(-1, keepdim=True))  # softmax backward, (n, k)
            g_wf.add_((g_s[:, :, None] * zc).sum((0, 1)).view_as(g_wf))
            g_pre = g_s[:, :, None] * w * (1 - zc * zc)  # (n, k, kh): through W_f and tanh
            if need_xa:
                torch.sum(g_pre, dim=1, out=g_xa[s:e])
            g_xv = g_pre.view(n * k, -1).to(lp)  # (n*k, kh)
            _accumulate(g_W, g_xv.t(), h)
            g_h = torch.ops.aten.threshold_backward(g_xv @ W_l, h, 0)  # (n*k, d): through ReLU
            _accumulate(g_U, g_h.t(), v)
            g_b.add_(g_h.sum(0, dtype=g_b.dtype))
            if need_regions:
                g_v = torch.mm(g_h, U_l).view(n, k, Dv).to(regions.dtype)
                g_regions[s:e] = g_v.add_(a[:, :, None] * gc[:, None, :])
        return g_regions, g_xa, g_U, g_b, g_W, g_wf, None
