"""Is AVE-Synth learnable but not trivial? Per-second softmax-regression probes on one split.

Generates AVE-Synth (or uses --dir), fits a linear classifier (29 classes) per second on the
train split and prints the input scale (mean, std) of audio and pooled visual features, then test accuracy for: audio (A), the 7x7 mean of the visual maps (V),
their concatenation (A+V), and the visual features at the ground-truth object cell, i.e. what
ideal audio-guided attention would see (V@obj, A+V@obj). These are probes of the data, not the
paper's models.

Usage: .venv/bin/python benchmarks/synth_probe.py --videos 240 --categories 6
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

EPOCHS = 300  # full-batch Adam steps
LR = 1e-3
WEIGHT_DECAY = 1e-3


def probe(x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray) -> float:
    """Test accuracy of softmax regression on per-second features x (N, 10, D)."""
    import torch

    torch.manual_seed(0)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    xtr, ytr = xt[tr].reshape(-1, x.shape[-1]), yt[tr].reshape(-1)
    xte, yte = xt[te].reshape(-1, x.shape[-1]), yt[te].reshape(-1)
    scale = xtr.std() + 1e-6
    model = torch.nn.Linear(x.shape[-1], 29)
    opt = torch.optim.Adam(model.parameters(), LR, weight_decay=WEIGHT_DECAY)
    for _ in range(EPOCHS):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xtr / scale), ytr).backward()
        opt.step()
    with torch.no_grad():
        return float((model(xte / scale).argmax(-1) == yte).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=240)
    ap.add_argument("--categories", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, help="use this AVE-Synth directory instead of generating one")
    args = ap.parse_args()

    from avel.data.dataset import AVEDataset
    from avel.data.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or generate(Path(tmp) / "synth", videos=args.videos, seed=args.seed,
                                    categories=args.categories, progress=False)
        ds = AVEDataset.open(root, cache_dir=Path(tmp) / "cache", progress=False)
        n = len(ds)
        tr, te = ds.split("train"), ds.split("test")
        y = ds.labels.argmax(-1)
        audio = np.array(ds.audio)
        visual = np.asarray(ds.visual, np.float32).reshape(n, 10, 49, 512)
        pooled = visual.mean(2)
        cells = ds.object_cells
        at_obj = np.take_along_axis(visual, np.maximum(cells, 0)[:, :, None, None], 2)[:, :, 0]
        at_obj = np.where((cells >= 0)[..., None], at_obj, pooled)  # background seconds: no object cell
        feats = {"A": audio, "V": pooled, "A+V": np.concatenate([audio, pooled], -1),
                 "V@obj": at_obj, "A+V@obj": np.concatenate([audio, at_obj], -1)}
        print(f"AVE-Synth seed {args.seed}: {n} videos, {len(ds.catalog.categories)} categories, "
              f"train {len(tr)} / test {len(te)} videos")
        for name, x in (("audio", audio), ("pooled visual", pooled)):  # input scale the models see
            print(f"{name:14s} feature scale: mean {x.mean():.4f}, std {x.std():.4f}")
        for name, x in feats.items():
            print(f"{name:8s} test accuracy per second: {probe(x, y, tr, te):.3f}")


if __name__ == "__main__":
    main()
