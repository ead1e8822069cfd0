"""A+V-att training-step speed at AVE shapes, against a plain fp32 matrix product measured in the same run.

    .venv/bin/python benchmarks/bench_train_step.py [--batch 64] [--steps 10] [--threads N] [--device cpu] [--profile]

Prints: time per training step (forward + backward + Adam; attention on avel's fused CPU path,
and for comparison on the plain whole-batch formulation) at batch 64 x 10 s x 7x7x512, the FLOPs
of that step as counted by torch.utils.flop_counter (every matrix product actually executed) plus
the LSTMs' products counted analytically (the fused LSTM kernels are invisible to the counter), the achieved GFLOP/s, the GFLOP/s of a 4096^3 fp32 matrix product timed before and
after the steps, their ratio, and inference throughput (segments/s) on a batch of 402 videos (the
AVE test split). Both with glibc's default allocator behaviour and with avel's tuning
(avel.train.perf.tune_cpu_allocator), which the trainer applies on CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from avel.models.attention import AudioGuidedAttention
from avel.models.registry import ModelConfig, create_model
from avel.train.perf import tune_cpu_allocator

T, GRID, DV, DA, C = 10, 7, 512, 128, 29  # AVE: 10 s, VGG-19 pool5 7x7x512, VGGish 128, 29 classes
MATMUL_N = 4096  # square fp32 product used as the reference rate
TEST_VIDEOS = 402  # AVE test split


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device, reps: int = 3) -> float:
    a = torch.randn(MATMUL_N, MATMUL_N, device=device)
    b = torch.randn(MATMUL_N, MATMUL_N, device=device)
    a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * MATMUL_N**3 / statistics.median(times) / 1e9


def make_batch(batch: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    audio = torch.rand(batch, T, DA, generator=g)
    visual = torch.rand(batch, T, GRID, GRID, DV, generator=g)
    labels = torch.randint(0, C, (batch, T), generator=g)
    return audio.to(device), visual.to(device), labels.to(device)


def train_step(model, opt, audio, visual, labels) -> None:
    out = model(audio, visual)
    loss = F.cross_entropy(out.logits.reshape(-1, C), labels.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def lstm_flops(lstm: torch.nn.LSTM, batch: int, input_grad: bool) -> int:
    """Matrix-product FLOPs of one LSTM layer, forward + backward (FlopCounterMode does not see the
    fused CPU/cuDNN LSTM kernels). Forward: 4 gates x (input + recurrent) products per step; backward:
    the weight gradients, the recurrent gradient, and the input gradient only when the input needs one."""
    dirs = 2 if lstm.bidirectional else 1
    rows = batch * T * dirs
    gates = 4 * lstm.hidden_size
    forward = 2 * rows * gates * (lstm.input_size + lstm.hidden_size)
    backward = forward + 2 * rows * gates * lstm.hidden_size + (2 * rows * gates * lstm.input_size if input_grad else 0)
    return forward + backward


def model_lstm_flops(model, batch: int) -> int:
    """Both BiLSTMs of A+V-att: the audio one reads the raw audio features (no input gradient); the
    visual one reads the attention context, whose gradient trains the attention."""
    return (lstm_flops(model.body.temporal_a.lstm, batch, input_grad=False)
            + lstm_flops(model.body.temporal_v.lstm, batch, input_grad=True))


def attention_modules(model) -> list:
    return [m for m in model.modules() if isinstance(m, AudioGuidedAttention)]


def set_fused(model, fused: bool) -> None:
    for m in attention_modules(model):
        m.fused = fused


def count_flops(model, opt, batch) -> tuple[int, dict[str, int]]:
    """FLOPs of the paper's formulation, counted on the plain (whole-batch) attention path: the
    fused CPU path runs the same products chunk by chunk, some as in-place addmm_ the counter skips."""
    counter = FlopCounterMode(display=False)
    set_fused(model, False)
    with counter:
        train_step(model, opt, *batch)
    set_fused(model, True)
    per_op = {str(op).replace("aten.", ""): n for op, n in counter.get_flop_counts()["Global"].items()}
    per_op["lstm"] = model_lstm_flops(model, batch[0].shape[0])
    return sum(per_op.values()), per_op


def measure(label: str, args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="A+V-att")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = make_batch(args.batch, device)
    flops, per_op = count_flops(model, opt, batch)
    mm_before = matmul_gflops(device)
    steps = {}
    for fused in (True, False):  # the CPU-fused attention, then the plain formulation, same weights
        set_fused(model, fused)
        for _ in range(args.warmup):
            train_step(model, opt, *batch)
        times = []
        for _ in range(args.steps):
            sync(device)
            t = time.perf_counter()
            train_step(model, opt, *batch)
            sync(device)
            times.append(time.perf_counter() - t)
        steps[fused] = times
    set_fused(model, True)
    mm_after = matmul_gflops(device)
    times = steps[True]
    step = statistics.median(times)
    plain = statistics.median(steps[False])
    mm = statistics.median([mm_before, mm_after])
    achieved = flops / step / 1e9

    model.eval()
    audio, visual, _ = make_batch(TEST_VIDEOS, device, seed=1)
    infer = {}
    with torch.inference_mode():
        for fused in (True, False):
            set_fused(model, fused)
            model(audio[:8], visual[:8])
            sync(device)
            t = time.perf_counter()
            model(audio, visual)
            sync(device)
            infer[fused] = time.perf_counter() - t
    set_fused(model, True)
    print(f"[{label}]")
    print(f"  training step (batch {args.batch}): median {step * 1e3:.1f} ms over {args.steps} steps "
          f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})")
    print(f"  FLOPs per step (counted): {flops / 1e9:.2f} GFLOP  "
          + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])))
    print(f"  achieved: {achieved:.1f} GFLOP/s; matmul {MATMUL_N}^3 fp32: {mm:.1f} GFLOP/s "
          f"(before {mm_before:.1f}, after {mm_after:.1f}); ratio {100 * achieved / mm:.1f}%")
    print(f"  plain (whole-batch) attention formulation: median {plain * 1e3:.1f} ms per step, "
          f"{flops / plain / 1e9:.1f} GFLOP/s, ratio {100 * flops / plain / 1e9 / mm:.1f}%"
          + ("" if device.type == "cpu" else " (the fused path is CPU-only: both lines time the plain one)"))
    print(f"  inference: {TEST_VIDEOS} videos in {infer[True] * 1e3:.0f} ms = {TEST_VIDEOS * T / infer[True]:,.0f} "
          f"segments/s (plain formulation: {TEST_VIDEOS * T / infer[False]:,.0f} segments/s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-default", action="store_true", help="only the tuned-allocator measurement")
    p.add_argument("--profile", action="store_true",
                   help="also print where a fused step spends its time (torch profiler, per op and input shape)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads")
    if device.type == "cpu" and not args.skip_default:
        measure("glibc default allocator", args, device)
    applied = device.type == "cpu" and tune_cpu_allocator()
    measure("avel allocator tuning" if applied else "as configured", args, device)
    if args.profile:
        profile_step(args, device)


def _product_shape(op: str, shapes: list) -> tuple[int, int, int] | None:
    """(m, k, n) of a profiled matrix-product row, from its input shapes; None for other ops."""
    name = op.replace("aten::", "")
    if name in ("mm", "addmm", "addmm_"):
        a, b = shapes[:2] if name == "mm" else shapes[1:3]
        if len(a) == 2 and len(b) == 2:
            return a[0], a[1], b[1]
    if name in ("bmm", "baddbmm"):
        a, b = shapes[:2] if name == "bmm" else shapes[1:3]
        if len(a) == 3 and len(b) == 3:
            return a[0] * a[1], a[2], b[2]
    return None


def _group(op: str, mkn: tuple[int, int, int] | None, k_regions: int) -> str:
    if "rnn" in op or "lstm" in op.lower():
        return "LSTMs (oneDNN kernels)"
    if mkn is None:
        return "everything else (elementwise, softmax, reductions, Adam, Python)"
    if k_regions in mkn:
        return f"W_v products ({k_regions}-wide)"
    if mkn.count(DV) >= 2 and max(mkn) > DV:
        return "U_v products (region rows x 512 x 512)"
    return "other matrix products"


def profile_step(args: argparse.Namespace, device: torch.device, steps: int = 3) -> None:
    """Self time per step of each op and input shape over a few fused training steps, then the
    same grouped by kind of work with each group's rate against the reference matrix product."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = create_model(ModelConfig(name="A+V-att")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = make_batch(args.batch, device)
    for _ in range(args.warmup):
        train_step(model, opt, *batch)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            train_step(model, opt, *batch)
    rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    print(f"[profile: self CPU time per step, mean of {steps} steps]")
    for e in rows[:25]:
        print(f"  {e.self_cpu_time_total / steps / 1e3:8.1f} ms  {e.key:32s} {e.input_shapes}")

    mm = matmul_gflops(device)
    lstm = model_lstm_flops(model, batch[0].shape[0])
    groups: dict[str, list[float]] = {}  # name -> [seconds per step, FLOP per step]
    for e in rows:
        mkn = _product_shape(e.key, e.input_shapes)
        g = groups.setdefault(_group(e.key, mkn, GRID * GRID), [0.0, 0.0])
        g[0] += e.self_cpu_time_total / steps / 1e6
        if mkn is not None:
            g[1] += 2 * mkn[0] * mkn[1] * mkn[2] * e.count / steps
    groups.setdefault("LSTMs (oneDNN kernels)", [0.0, 0.0])[1] = lstm
    total = sum(t for t, _ in groups.values())
    flops = sum(f for _, f in groups.values())
    print(f"[profile by kind of work, against a {MATMUL_N}^3 fp32 product at {mm:.1f} GFLOP/s; "
          f"profiled step {total * 1e3:.1f} ms, {flops / 1e9:.2f} GFLOP, ratio {100 * flops / total / 1e9 / mm:.1f}%]")
    for name, (t, f) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        rate = f"{f / t / 1e9:6.1f} GFLOP/s = {100 * f / t / 1e9 / mm:5.1f}% of the product" if f else " " * 39
        at_ref = (total - t + f / mm / 1e9)
        what = "if at the product's rate" if f else "if it took no time"
        print(f"  {t * 1e3:7.1f} ms {f / 1e9:6.2f} GFLOP {rate}   {name}; {what}: step "
              f"{at_ref * 1e3:.1f} ms, ratio {100 * flops / at_ref / 1e9 / mm:.1f}%")


if __name__ == "__main__":
    main()
