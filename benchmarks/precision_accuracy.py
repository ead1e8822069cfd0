"""Test accuracy of A+V-att trained in fp32 and in bf16 on a small AVE-Synth (synthetic), over seeds.

    .venv/bin/python benchmarks/precision_accuracy.py [--videos 120] [--categories 6] [--seeds 3] [--epochs 5]

Generates AVE-Synth (the generated stand-in dataset: these numbers test the implementation, not the
paper's claims) into --work-dir, trains A+V-att (attention_dim 64 to keep bf16 affordable on CPUs
that emulate it) with each precision and seed, and prints test accuracy per run and mean ± std per
precision, with the difference of the means against the fp32 seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=120)
    p.add_argument("--categories", type=int, default=6)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--attention-dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "avel-precision-accuracy")
    args = p.parse_args()

    from avel.data.dataset import AVEDataset
    from avel.data.synth import generate
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    data = args.work_dir / f"synth-{args.videos}-{args.categories}"
    if not data.is_dir():
        generate(data, videos=args.videos, categories=args.categories, seed=0, progress=False)
    ds = AVEDataset.open(data, progress=False)
    print(f"AVE-Synth (synthetic) {args.videos} videos, {args.categories} categories; A+V-att attention_dim "
          f"{args.attention_dim}; {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, {args.threads} thread(s)")
    acc: dict[str, list[float]] = {}
    for prec in args.precisions:
        for seed in range(args.seeds):
            t = time.perf_counter()
            cfg = TrainConfig(epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=seed, num_threads=args.threads, precision=prec)
            r = train(ds, ModelConfig(name="A+V-att", attention_dim=args.attention_dim), cfg,
                      args.work_dir / "runs" / f"{prec}-seed{seed}", progress=False)
            acc.setdefault(prec, []).append(r["test"]["accuracy"])
            print(f"  {prec} seed {seed}: test {r['test']['accuracy']:.2f}% (selected epoch {r['best_epoch']}, "
                  f"{time.perf_counter() - t:.0f} s)", flush=True)
    for prec, a in acc.items():
        print(f"{prec}: {statistics.mean(a):.2f} ± {statistics.stdev(a) if len(a) > 1 else 0.0:.2f} "
              f"(mean ± std over {len(a)} seeds)")
    if "fp32" in acc and "bf16" in acc and len(acc["fp32"]) > 1:
        diff = statistics.mean(acc["bf16"]) - statistics.mean(acc["fp32"])
        print(f"bf16 - fp32: {diff:+.2f} points; fp32 seed-to-seed std {statistics.stdev(acc['fp32']):.2f}")


if __name__ == "__main__":
    main()
