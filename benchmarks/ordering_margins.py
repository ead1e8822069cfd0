"""How far apart are Table 1's models on a small AVE-Synth, seed by seed? The margins behind the
orderings the tests assert (tests/test_train.py), measured over several seeds.

    .venv/bin/python benchmarks/ordering_margins.py --videos 600 --categories 28 --train 240 --val 60 --seeds 0 1 2
    .venv/bin/python benchmarks/ordering_margins.py --videos 300 --categories 6 --train 96 --val 36 \
        --batch 24 --lr 3e-3 --epochs 40 --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/ordering_margins.py --videos 300 --categories 6 --train 96 --val 36 \
        --batch 24 --lr 3e-3 --epochs 40 --seeds 0 1 2 --models V W-V V-att W-V-att [--visual-gain 10]

Generates AVE-Synth (seed 0) into a temporary folder, splits a fixed permutation of its rows into
train / val / the rest as test (as the tests do), trains each model per seed (1 thread, early
stopping on validation) and prints test accuracies, the majority-label rate and A+V minus A.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=600)
    p.add_argument("--categories", type=int, default=28)
    p.add_argument("--train", type=int, default=240, help="training videos (the rest after --val is test)")
    p.add_argument("--val", type=int, default=60)
    p.add_argument("--models", nargs="+", default=["A", "V", "A+V"], help="'W-' prefix: weakly supervised")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--visual-gain", type=float, default=1.0,
                   help="AVE-Synth's SynthParams.visual_gain (1.0: generator v1's visual scale)")
    args = p.parse_args()

    from avel.data.dataset import AVEDataset, SplitView
    from avel.data.synth import SynthParams, generate
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "synth", videos=args.videos, seed=0, categories=args.categories, progress=False,
                        params=SynthParams(visual_gain=args.visual_gain))
        ds = AVEDataset.open(root, progress=False)
        rows = np.random.default_rng(0).permutation(len(ds))
        a, b = args.train, args.train + args.val
        view = SplitView(ds, {"train": rows[:a], "val": rows[a:b], "test": rows[b:]})
        test_labels = np.asarray(ds.labels[np.sort(rows[b:])]).argmax(-1)
        majority = 100.0 * np.bincount(test_labels.ravel()).max() / test_labels.size
        print(f"AVE-Synth {args.videos} videos, {args.categories} categories, visual gain {args.visual_gain:g}; "
              f"train {a}, val {args.val}, "
              f"test {len(rows) - b}; majority rate {majority:.1f}%")
        for seed in args.seeds:
            cfg = TrainConfig(epochs=args.epochs, patience=10, batch_size=args.batch, lr=args.lr, num_threads=1,
                              seed=seed)
            acc = {}
            for name in args.models:
                weak = name.startswith("W-")
                mcfg = ModelConfig(name=name[2:] if weak else name, weak=weak, attention_dim=64)
                acc[name] = train(view, mcfg, cfg, Path(tmp) / f"{name}-{seed}", progress=False)["test"]["accuracy"]
            margin = f"; A+V - A {acc['A+V'] - acc['A']:+.1f}" if {"A", "A+V"} <= acc.keys() else ""
            print(f"seed {seed}: " + ", ".join(f"{k} {v:.1f}" for k, v in acc.items()) + margin, flush=True)


if __name__ == "__main__":
    main()
