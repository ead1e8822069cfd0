"""Parameters and inference speed of the paper's models beside the later methods, on this CPU.

    .venv/bin/python benchmarks/bench_methods.py [--videos 64] [--batch 16] [--reps 3] [--threads N]

Prints the CPU (avel.precision.machine_name), torch's thread count and, for A+V-att, DMRN, CMRAN, PSP
and CMBS (and their W- networks with --weak): parameters, the fastest forward pass over
`--videos` random 10-s clips (7x7x512 visual maps, 128-d audio) in batches of `--batch`, fp32,
no gradients, and segments (seconds of video) per second. The measurement is avel.models.speed's
(the one `avel reproduce --tables sota` uses): each model gets one warm-up pass, then the models take
turns for `--reps` rounds and each keeps its fastest pass, so that a change in the machine's load
during the run affects them alike; compare numbers within one run.
"""

from __future__ import annotations

import argparse
import os

import torch

from avel.models.registry import ModelConfig
from avel.models.speed import T, measure_configs

MODELS = ("A+V-att", "DMRN", "CMRAN", "PSP", "CMBS")


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
    variants = [(m, False) for m in MODELS] + ([(m, True) for m in ("CMRAN", "PSP", "CMBS")] if args.weak else [])
    configs = {("W-" if weak else "") + name: ModelConfig(name=name, weak=weak) for name, weak in variants}
    res = measure_configs(configs, videos=args.videos, batch=args.batch, reps=args.reps)
    print(f"CPU: {res['machine']} ({os.cpu_count()} logical CPUs; torch threads {res['threads']}); "
          f"{args.videos} clips x {T} s, batch {args.batch}, fp32, fastest of {args.reps} interleaved rounds")
    print(f"{'model':<10} {'parameters':>12} {'s per pass':>11} {'segments/s':>11}")
    for label, m in res["models"].items():
        print(f"{label:<10} {m['parameters']:>12,} {m['seconds']:>11.3f} {m['segments_per_second']:>11.0f}")


if __name__ == "__main__":
    main()
