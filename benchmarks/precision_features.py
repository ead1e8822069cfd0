"""bf16 against fp32 features: relative error of VGG-19 pool5 maps and VGGish embeddings on decoded frames.

    .venv/bin/python benchmarks/precision_features.py [--image-size 224] [--frames-per-second 2] [--seconds 2]

Renders a clip (320x240, 25 fps H.264 + AAC, a shape and a tone in second 1), writes random
He-initialised weights in the real layouts (Keras VGG-19 h5, torchvggish state dict: speed and
rounding behave as with the trained weights, the features mean nothing semantically), extracts it
with --precision fp32 and bf16 and prints ||bf16 - fp32|| / ||fp32|| for the per-second pool5 maps
and VGGish embeddings (overall and the worst second) and the largest element error relative to the
largest fp32 value. bf16 is emulated (slowly, but exactly) on CPUs without a bf16 fast path: keep
the clip short there.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--frames-per-second", type=int, default=2)
    p.add_argument("--seconds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "avel-precision-features")
    args = p.parse_args()

    from avel.features.extractor import ExtractorConfig, FeatureExtractor
    from avel.features.render import ClipSpec, render_clip
    from avel.features.weights import random_weight_files

    args.work_dir.mkdir(parents=True, exist_ok=True)
    weights = random_weight_files(args.work_dir / "weights")
    clip = render_clip(args.work_dir / f"clip{args.seconds}.mp4",
                       ClipSpec(seconds=args.seconds, fps=25, width=320, height=240, shape_seconds={1},
                                tone_seconds={0, 1}, seed=3))
    feats = {}
    for prec in ("fp32", "bf16"):
        ex = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19_keras"]),
                                              vggish_weights=str(weights["vggish"]), image_size=args.image_size,
                                              frames_per_second=args.frames_per_second, device=args.device,
                                              precision=prec))
        t = time.perf_counter()
        feats[prec] = ex.extract(clip)
        print(f"{prec}: {time.perf_counter() - t:.1f} s for a {args.seconds}-s clip at {args.frames_per_second} "
              f"frames/s, {args.image_size} px")
    b, f = feats["bf16"], feats["fp32"]
    for name, x, y in (("VGG-19 pool5 maps", b.visual, f.visual), ("VGGish embeddings", b.audio, f.audio)):
        worst = max(rel(x[t], y[t]) for t in range(len(y)))
        print(f"{name}: relative L2 error {100 * rel(x, y):.2f}% (worst second {100 * worst:.2f}%); "
              f"largest element error {100 * float(np.abs(x - y).max() / np.abs(y).max()):.2f}% of the largest value")


if __name__ == "__main__":
    main()
