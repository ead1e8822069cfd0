"""The frames-per-second trade-off: seconds per 10-s clip and the authors' model's per-second agreement with 16 fps.

For each --frames-per-second setting (default 16 8 4 2), FeatureExtractor.extract runs end to end
(decode, VGG-19 on the sampled frames, VGGish) on --clips rendered 10-s clips (640x360, 25 fps, events
of a shape and a tone plus distractor seconds; benchmarks/agreement.py) at --precision; the line gives
seconds per clip (the mean over the clips, all measured in this run), its speed-up over 16 fps, and how
often the authors' A+V-att (random weights) predicts the same class for a second from these features
as from the 16-fps features. Backbone weights are random in the real layouts (no download).

    .venv/bin/python benchmarks/bench_fps.py [--clips 10] [--precision int8] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from agreement import CLIP_SECONDS, agreement_line, authors_model, render_clips
from avel.features.extractor import ExtractorConfig, FeatureExtractor, resolve_device
from avel.features.weights import random_weight_files
from avel.precision import EXTRACT_PRECISIONS, cpu_info

SETTINGS = (16, 8, 4, 2)  # frames per second compared (16: the authors', the reference)


def default_precision(device: torch.device) -> str:
    """int8 on a CPU where it runs (the fastest path there), else auto."""
    from avel.features.quantize import unavailable_reason

    return "int8" if unavailable_reason(device.type) is None else "auto"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=10, help="rendered 10-s clips (default 10: 100 seconds)")
    p.add_argument("--frames-per-second", type=int, nargs="+", default=list(SETTINGS))
    p.add_argument("--precision", choices=EXTRACT_PRECISIONS, default=None,
                   help="extraction precision (default: int8 where it runs, else auto)")
    p.add_argument("--device", default="auto")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "avel-bench-fps")
    args = p.parse_args()
    os.environ.setdefault("AVEL_CACHE", str(args.work_dir / "cache"))  # int8 calibration of the random weights
    device = resolve_device(args.device)
    precision = args.precision or default_precision(device)
    weights = random_weight_files(args.work_dir / "weights")
    clips = render_clips(args.work_dir / "clips", args.clips)
    settings = sorted(set(args.frames_per_second) | {16}, reverse=True)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"{cpu_info()['model'] or 'unknown CPU'}, {torch.get_num_threads()} threads")
    print(f"frames-per-second trade-off on {where}; precision {precision}; {len(clips)} rendered clips x "
          f"{CLIP_SECONDS} s (640x360, 25 fps); random VGG-19 / VGGish / authors' A+V-att weights")
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    model = authors_model()
    feats, per_clip = {}, {}
    for fps in settings:
        ex = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19"]), vggish_weights=str(weights["vggish"]),
                                              frames_per_second=fps, device=str(device), precision=precision))
        ex.extract(clips[0], 1)  # warm-up: kernels, allocator
        start = time.perf_counter()
        feats[fps] = [ex.extract(c) for c in clips]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        per_clip[fps] = (time.perf_counter() - start) / len(clips)
    print(f"{'fps':>4} {'s per 10-s clip':>16} {'vs 16 fps':>10}  per-second agreement with 16 fps")
    for fps in settings:
        _, line = agreement_line(model, feats[16], feats[fps])
        print(f"{fps:>4} {per_clip[fps]:>16.2f} {per_clip[16] / per_clip[fps]:>9.2f}x  "
              f"{'(the reference)' if fps == 16 else line}")


if __name__ == "__main__":
    main()
