"""Parameters and inference speed of the paper's models beside the later methods, on this CPU.

    .venv/bin/python benchmarks/bench_methods.py [--videos 64] [--batch 16] [--reps 3] [--threads N]

Prints the CPU (lscpu's model name), torch's thread count and, for A+V-att, DMRN, CMRAN, PSP and
CMBS (and their W- networks with --weak): parameters, the median time of a forward pass over
`--videos` random 10-s clips (7x7x512 visual maps, 128-d audio) in batches of `--batch`, fp32,
no gradients, and segments (seconds of video) per second. Each model gets one warm-up pass, then
the models take turns for `--reps` rounds and each keeps its fastest pass, so that a change in the
machine's load during the run affects them alike; compare numbers within one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import torch

from avel.models.registry import ModelConfig, create_model

T, GRID, DV, DA = 10, 7, 512, 128  # AVE: 10 s, VGG-19 pool5 7x7x512, VGGish 128
MODELS = ("A+V-att", "DMRN", "CMRAN", "PSP", "CMBS")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU (lscpu not available)"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown CPU")


@torch.inference_mode()
def timed_pass(model: torch.nn.Module, audio: torch.Tensor, visual: torch.Tensor, batch: int) -> float:
    """Seconds for one forward pass over all clips."""
    t = time.perf_counter()
    for i in range(0, len(audio), batch):
        model(audio[i:i + batch], visual[i:i + batch])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--weak", action="store_true", help="also the W- networks of CMRAN, PSP and CMBS")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(args.videos, T, DA, generator=g)
    visual = torch.rand(args.videos, T, GRID, GRID, DV, generator=g)
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical CPUs; torch threads {torch.get_num_threads()}); "
          f"{args.videos} clips x {T} s, batch {args.batch}, fp32, fastest of {args.reps} interleaved rounds")
    variants = [(m, False) for m in MODELS] + ([(m, True) for m in ("CMRAN", "PSP", "CMBS")] if args.weak else [])
    models = {}
    for name, weak in variants:
        torch.manual_seed(0)
        models[("W-" if weak else "") + name] = create_model(ModelConfig(name=name, weak=weak)).eval()
    best = {label: timed_pass(m, audio, visual, args.batch) for label, m in models.items()}  # warm-up
    best = {label: float("inf") for label in best}
    for _ in range(args.reps):
        for label, model in models.items():
            best[label] = min(best[label], timed_pass(model, audio, visual, args.batch))
    print(f"{'model':<10} {'parameters':>12} {'s per pass':>11} {'segments/s':>11}")
    for label, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        print(f"{label:<10} {params:>12,} {best[label]:>11.3f} {args.videos * T / best[label]:>11.0f}")


if __name__ == "__main__":
    main()
