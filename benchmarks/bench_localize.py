"""Benchmark `avel localize` end to end: seconds per 10-s video (decode, VGG-19 + VGGish features,
the localizer's windows, and every output: events.json, exports, features.h5, pictures, index.html),
beside the GFLOP/s of a big fp32 matrix product measured in the same run, so the figure can be
compared across machines (a machine twice as fast at the product should take about half the time).

The model is the default shape (A+V-att, 7x7 maps) with random weights; the backbones are random
weights in the real VGG-19 / VGGish layouts (speed does not depend on the values). The clip is
rendered with PyAV (640x360, 25 fps H.264 + AAC). The command runs in-process exactly as typed:

    avel localize CLIP --model RUN --out DIR --vgg19-weights W --vggish-weights W --quiet

    .venv/bin/python benchmarks/bench_localize.py [--seconds 10] [--frames-per-second 16] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import avel
from avel.cli import main as avel_main
from avel.data.catalog import AVE_CATEGORIES
from avel.features.extractor import ExtractorConfig, FeatureExtractor
from avel.features.render import ClipSpec, render_clip
from avel.features.vgg19 import VGG19_CFG, conv_macs
from avel.features.weights import random_weight_files
from avel.io import write_json
from avel.inference import pipeline
from avel.inference.progress import Stages
from avel.models.registry import ModelConfig, create_model
from avel.train.checkpoint import CONFIG_FILE, RUN_FORMAT, save_model
from avel.train.config import TrainConfig

AVE_SECONDS = 10  # figures are per 10-s video
MATMUL_N = 2048  # square fp32 matrix product used as the machine's reference rate


def matmul_gflops(repeats: int = 10) -> float:
    """Achieved GFLOP/s of an n x n float32 matrix product (2 n^3 FLOP)."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * MATMUL_N**3 * repeats / (time.perf_counter() - start) / 1e9


class TimedStages(Stages):
    """Records when each stage of the video starts and finishes (the command runs with --quiet)."""

    log_of: list[tuple[str, str, float]] = []

    def start(self, stage: str, total: int | None) -> None:
        TimedStages.log_of.append(("start", stage, time.perf_counter()))
        super().start(stage, total)

    def finish(self, stage: str, total: int | None = None) -> None:
        TimedStages.log_of.append(("finish", stage, time.perf_counter()))
        super().finish(stage, total)


def make_run(folder: Path, weights: dict[str, Path], fps: int) -> Path:
    """A run directory with an untrained A+V-att recorded with this extractor (as `avel train` writes one)."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="A+V-att")
    info = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19"]), vggish_weights=str(weights["vggish"]),
                                            frames_per_second=fps)).info
    write_json(folder / CONFIG_FILE, {"format": RUN_FORMAT, "avel_version": avel.__version__, "model": cfg.to_dict(),
                                      "train": TrainConfig().to_dict(),
                                      "data": {"root": None, "synthetic": False, "extractor": info,
                                               "categories": list(AVE_CATEGORIES)}})
    save_model(folder, create_model(cfg), cfg, {})
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=AVE_SECONDS, help="clip length (s); figures are scaled to 10 s")
    p.add_argument("--frames-per-second", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1, help="timed runs (each into a fresh output folder)")
    p.add_argument("--no-pictures", action="store_true", help="time without heatmaps and index.html")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "avel-bench-localize")
    args = p.parse_args()
    weights = random_weight_files(args.work_dir / "weights")
    clip = args.work_dir / f"clip_{args.seconds}s.mp4"
    if not clip.is_file():
        render_clip(clip, ClipSpec(seconds=args.seconds, fps=25, width=640, height=360,
                                   shape_seconds=set(range(0, args.seconds, 2)), tone_seconds={1, 2}))
    run = args.work_dir / f"run_fps{args.frames_per_second}"
    if not (run / "model.safetensors").is_file():
        run.mkdir(parents=True, exist_ok=True)
        make_run(run, weights, args.frames_per_second)
    scale = AVE_SECONDS / args.seconds
    print(f"avel localize, A+V-att (7x7 maps, random weights), random VGG-19 (torchvision layout) + VGGish, "
          f"{args.frames_per_second} frames/s at 224 px; CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"clip: {args.seconds} s, 640x360 25 fps H.264 + AAC; figures per 10-s video"
          f"{' (scaled from ' + str(args.seconds) + ' s)' if args.seconds != AVE_SECONDS else ''}")
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    pipeline.Stages = TimedStages  # record stage times inside the unchanged command
    for i in range(args.repeats):
        out = args.work_dir / "out"
        shutil.rmtree(out, ignore_errors=True)
        before = matmul_gflops()
        TimedStages.log_of = []
        start = time.perf_counter()
        rc = avel_main(["localize", str(clip), "--model", str(run), "--out", str(out), "--quiet",
                        "--vgg19-weights", str(weights["vgg19"]), "--vggish-weights", str(weights["vggish"]),
                        "--frames-per-second", str(args.frames_per_second),
                        *(["--no-pictures"] if args.no_pictures else [])])
        wall = time.perf_counter() - start
        assert rc == 0, rc
        mm = (before + matmul_gflops()) / 2
        t = {(kind, stage): when for kind, stage, when in TimedStages.log_of}
        parts = {"load (weights, model)": t[("start", "decode")] - start,
                 "decode + features": t[("finish", "features")] - t[("start", "decode")],
                 "model windows": t[("finish", "model windows")] - t[("start", "model windows")]}
        if ("start", "pictures") in t:
            parts["pictures + page"] = t[("finish", "pictures")] - t[("start", "pictures")]
        parts["other outputs"] = wall - sum(parts.values())
        print(f"run {i + 1}: {wall * scale:.1f} s per 10-s video end to end; matrix product ({MATMUL_N}^2 fp32, "
              f"same run) {mm:.1f} GFLOP/s")
        print("  " + "; ".join(f"{k} {v * scale:.1f} s ({v / wall:.0%})" for k, v in parts.items()))
        vgg = 2 * conv_macs(VGG19_CFG, 3, 224, 224) * args.frames_per_second * args.seconds / 1e9
        print(f"  VGG-19 work {vgg:.0f} GFLOP in {wall:.1f} s: {vgg / wall:.1f} GFLOP/s end to end = "
              f"{vgg / wall / mm:.0%} of the same-run matrix-product rate")


if __name__ == "__main__":
    main()
