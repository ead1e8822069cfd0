"""How far apart are Table 1's models on a small AVE-Synth, seed by seed? The margins behind the
orderings the tests assert (tests/test_train.py), measured over several seeds.

    .venv/bin/python benchmarks/ordering_margins.py --videos 600 --categories 28 --train 240 --val 60 --seeds 0 1 2
    .venv/bin/python benchmarks/ordering_margins.py --videos 300 --categories 6 --train 96 --val 36 \
        --batch 24 --lr 3e-3 --epochs 40 --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/ordering_margins.py --videos 300 --categories 6 --train 96 --val 36 \
        --batch 24 --lr 3e-3 --epochs 40 --seeds 0 1 2 --models V W-V V-att W-V-att [--visual-gain 10]
    .venv/bin/python benchmarks/ordering_margins.py ... --generator 1 --no-standardize   # the earlier recipe on v1

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


ORDERINGS = [("A+V-att", "A"), ("A+V-att", "V"), ("V-att", "V"), ("A+V", "V"), ("A+V", "A")]  # the paper's


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
    p.add_argument("--visual-gain", type=float, default=None,
                   help="AVE-Synth's SynthParams.visual_gain (default: the generator version's; v1 1, v2 10)")
    p.add_argument("--generator", type=int, default=None, help="AVE-Synth generator version (default: the current)")
    p.add_argument("--no-standardize", action="store_true", help="train without input standardization")
    args = p.parse_args()

    from dataclasses import replace

    from avel.data.dataset import AVEDataset, SplitView
    from avel.data.synth import GENERATOR_VERSION, generate, params_for
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        version = args.generator or GENERATOR_VERSION
        params = params_for(version)
        if args.visual_gain is not None:
            params = replace(params, visual_gain=args.visual_gain)
        root = generate(Path(tmp) / "synth", videos=args.videos, seed=0, categories=args.categories, progress=False,
                        params=params, version=version)
        ds = AVEDataset.open(root, progress=False)
        rows = np.random.default_rng(0).permutation(len(ds))
        a, b = args.train, args.train + args.val
        view = SplitView(ds, {"train": rows[:a], "val": rows[a:b], "test": rows[b:]})
        test_labels = np.asarray(ds.labels[np.sort(rows[b:])]).argmax(-1)
        majority = 100.0 * np.bincount(test_labels.ravel()).max() / test_labels.size
        print(f"AVE-Synth v{version} {args.videos} videos, {args.categories} categories, visual gain "
              f"{params.visual_gain:g}, standardize {not args.no_standardize}; "
              f"train {a}, val {args.val}, "
              f"test {len(rows) - b}; majority rate {majority:.1f}%")
        runs: dict[str, list[float]] = {}
        for seed in args.seeds:
            cfg = TrainConfig(epochs=args.epochs, patience=10, batch_size=args.batch, lr=args.lr, num_threads=1,
                              seed=seed, standardize=not args.no_standardize)
            acc = {}
            for name in args.models:
                weak = name.startswith("W-")
                mcfg = ModelConfig(name=name[2:] if weak else name, weak=weak, attention_dim=64)
                acc[name] = train(view, mcfg, cfg, Path(tmp) / f"{name}-{seed}", progress=False)["test"]["accuracy"]
            margin = f"; A+V - A {acc['A+V'] - acc['A']:+.1f}" if {"A", "A+V"} <= acc.keys() else ""
            print(f"seed {seed}: " + ", ".join(f"{k} {v:.1f}" for k, v in acc.items()) + margin, flush=True)
            for k, v in acc.items():
                runs.setdefault(k, []).append(v)
        print("mean ± std over seeds: " + ", ".join(f"{k} {np.mean(v):.1f} ± {np.std(v, ddof=1):.1f}"
                                                    for k, v in runs.items() if len(v) > 1))
        for better, worse in ORDERINGS:
            if better in runs and worse in runs and len(runs[better]) > 1:
                gap = np.mean(runs[better]) - np.mean(runs[worse])
                spread = max(np.std(runs[better], ddof=1), np.std(runs[worse], ddof=1))
                print(f"{better} - {worse}: {gap:+.1f} points, larger std {spread:.1f} "
                      f"({'holds' if gap > spread else 'does not hold'} by more than one std)")


if __name__ == "__main__":
    main()
