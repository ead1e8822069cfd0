"""How should the inputs be standardized? Per channel (avel's default), one scalar per input, or not at all.

Trains V, V-att and A+V-att on a small AVE-Synth (generator seed 0; a fixed permutation split into
train / val / the rest as test, as tests/test_train.py does) under three input scalings and prints
test accuracy per seed:

* channel: TrainConfig.standardize (avel.train.standardize.fit: mean and std per channel; the 7x7
  visual maps per channel over all cells);
* scalar: one mean and one std per input over all its values (channel ratios kept), computed on
  the first 64 training videos;
* off: TrainConfig.standardize=False (the features as they are).

    .venv/bin/python benchmarks/standardize_choice.py --modes channel,scalar,off --seeds 0
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="channel,scalar,off")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--categories", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()

    from avel.data.dataset import AVEDataset, SplitView
    from avel.data.synth import generate
    from avel.models.registry import ModelConfig
    from avel.train import standardize
    from avel.train.config import TrainConfig
    from avel.train.data import read_rows
    from avel.train.trainer import train

    per_channel = standardize.fit

    def one_scalar(arrays, rows):
        out = {}
        for k, (m, s) in per_channel(arrays, rows).items():
            x = read_rows(arrays[k], np.sort(rows)[:64], np.float64)
            out[k] = (np.full_like(m, x.mean()), np.full_like(s, x.std()))
        return out

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "d", videos=args.videos, categories=args.categories, seed=0, progress=False)
        ds = AVEDataset.open(root, progress=False)
        rows = np.random.default_rng(0).permutation(len(ds))
        view = SplitView(ds, {"train": rows[:96], "val": rows[96:132], "test": rows[132:]})
        print(f"AVE-Synth {args.videos} videos, {args.categories} categories; train 96, val 36, "
              f"test {len(rows) - 132}; {args.epochs} epochs, batch 24, lr 3e-3, attention_dim 64")
        for mode in args.modes.split(","):
            standardize.fit = one_scalar if mode == "scalar" else per_channel
            for seed in args.seeds:
                cfg = TrainConfig(epochs=args.epochs, patience=10, batch_size=24, lr=3e-3, num_threads=1, seed=seed,
                                  standardize=mode != "off")
                acc = {name: train(view, ModelConfig(name=name, attention_dim=64), cfg,
                                   Path(tmp) / f"{mode}{seed}{name}", progress=False)["test"]["accuracy"]
                       for name in ("V", "V-att", "A+V-att")}
                print(f"{mode:8s} seed {seed}: " + ", ".join(f"{k} {v:.1f}" for k, v in acc.items()), flush=True)
        standardize.fit = per_channel


if __name__ == "__main__":
    main()
