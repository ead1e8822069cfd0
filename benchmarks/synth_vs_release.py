"""AVE-Synth's audio statistics beside the released VGGish features, per generator version.

Prints mean, std, share of zeros, 99th percentile and maximum of the release's
audio_feature_noisy.h5 ((178, 10, 128): the only released audio features here) and of each
generator version's audio_feature.h5, plus the std of the pooled (7x7 mean) visual vectors and
its ratio to the audio's. tests/test_synth.py asserts v2's audio against the release.

Usage: .venv/bin/python benchmarks/synth_vs_release.py [--videos 280] [--categories 28]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np

RELEASE = Path(__file__).resolve().parents[2] / "shared" / "ave-release"


def audio_stats(a: np.ndarray) -> str:
    return (f"mean {a.mean():.3f}  std {a.std():.3f}  zeros {(a == 0).mean():.3f}  "
            f"p99 {np.percentile(a, 99):.3f}  max {a.max():.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=280)
    ap.add_argument("--categories", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--release", type=Path, default=RELEASE)
    args = ap.parse_args()

    from avel.data.synth import VERSIONS, generate

    with h5py.File(args.release / "audio_feature_noisy.h5", "r") as f:
        real = f["avadataset"][()]
    print(f"{'release audio_feature_noisy.h5':34s} {audio_stats(real)}  {real.shape}")
    with tempfile.TemporaryDirectory() as tmp:
        for v in sorted(VERSIONS):
            root = generate(Path(tmp) / f"v{v}", videos=args.videos, categories=args.categories, seed=args.seed,
                            version=v, progress=False)
            with h5py.File(root / "audio_feature.h5", "r") as f:
                a = f["avadataset"][()]
            with h5py.File(root / "visual_feature.h5", "r") as f:
                pooled = f["avadataset"][()].mean((2, 3))
            print(f"{f'AVE-Synth v{v} audio_feature.h5':34s} {audio_stats(a)}  "
                  f"pooled visual std {pooled.std():.3f} ({pooled.std() / a.std():.2f}x the audio's)")


if __name__ == "__main__":
    main()
