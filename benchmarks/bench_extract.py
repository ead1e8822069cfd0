"""Benchmark `avel extract`: seconds per 10-s video, VGG-19 GFLOP/s against a plain matrix product's
GFLOP/s measured in the same run, the share of wall time spent decoding, and the effect of
--frames-per-second.

Weights are random (He-init) in the real layouts: speed does not depend on the values. The clip
is rendered with PyAV (640x360, 25 fps H.264 + AAC, like a YouTube clip). On a slow CPU use a
shorter clip (--seconds 2): per-video figures are scaled to 10 s (work is linear in seconds) and
the output says so.

    .venv/bin/python benchmarks/bench_extract.py --seconds 2 --frames-per-second 16 4 1

With --accuracy it measures instead what --frames-per-second does to localization accuracy on the
alignment set of tests/test_localize.py (rendered clips where a shape and its tone appear together
only during the event; --duty < 1 flashes the shape for part of each second): extract at each
setting (random weights, small frames), then report (a) "shape seen": how often the visual
features of a held-out second identify what it showed (nothing / shape A / shape B; nearest
class centroid of the training videos), and (b) per-second test accuracy of A+V-att trained on them.

    .venv/bin/python benchmarks/bench_extract.py --accuracy --frames-per-second 1 4 16 --duty 1 0.25
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avel.features.extractor import ExtractorConfig, FeatureExtractor, resolve_device
from avel.features.render import ALIGNMENT_TRUTH, ClipSpec, make_alignment_set, render_clip
from avel.features.vgg19 import VGG19_CFG, conv_macs
from avel.features.weights import empty_net, he_init_, random_weight_files

AVE_SECONDS = 10  # seconds per AVE clip: figures are reported per 10-s video
MATMUL_N = {"cpu": 2048, "cuda": 8192}  # square matrix side for the reference matrix product
ACCURACY_SPLITS = {"train": 16, "val": 4, "test": 8}  # alignment-set videos per split (--accuracy)
ACCURACY_IMAGE_SIZE = 32  # pixels (1x1 pool5 map): the accuracy runs extract many frames on a CPU
ACCURACY_DISTRACTORS = {"shape_only": 1, "tone_only": 3}  # per video: audio alone would score ~70%


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, repeats: int = 10) -> float:
    """Achieved GFLOP/s of an n x n float32 matrix product (2 n^3 FLOP)."""
    n = MATMUL_N[device.type]
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


@torch.inference_mode()
def vgg_layout_gflops(device: torch.device, size: int, batch: int, repeats: int = 2) -> dict[str, float]:
    """VGG-19 trunk alone on random input: GFLOP/s in channels-last vs contiguous (NCHW) layout."""
    net = he_init_(empty_net("vgg19"), seed=0).to(device).eval()
    flop = 2 * conv_macs(VGG19_CFG, 3, size, size) * batch
    out = {}
    for name, fmt in (("channels_last", torch.channels_last), ("nchw", torch.contiguous_format)):
        net = net.to(memory_format=fmt)
        x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        net(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
        sync(device)
        out[name] = flop * repeats / (time.perf_counter() - start) / 1e9
    return out


def run(videos: list[Path], weights: dict[str, Path], fps: int, args: argparse.Namespace) -> dict[str, float]:
    ex = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19"]), vggish_weights=str(weights["vggish"]),
                                          frames_per_second=fps, image_size=args.image_size,
                                          batch_size=args.batch_size, device=args.device))
    ex.extract(videos[0], args.seconds)  # warm-up: kernels, allocator, page cache
    ex.stats = type(ex.stats)()
    start = time.perf_counter()
    for _, result in ex.extract_many([(str(i), p) for i, p in enumerate(videos)], args.seconds):
        assert not isinstance(result, Exception), result
    sync(ex.device)
    wall = time.perf_counter() - start
    s = ex.stats
    flop = 2 * conv_macs(VGG19_CFG, 3, args.image_size, args.image_size) * s.frames
    scale = AVE_SECONDS / args.seconds
    return {"fps": fps, "s_per_video": wall / len(videos) * scale, "vgg_gflops": flop / s.vgg19_s / 1e9,
            "vgg_share": s.vgg19_s / wall, "vggish_share": s.vggish_s / wall, "decode_work_share": s.decode_s / wall,
            "decode_wait_share": s.wait_s / wall, "frames": s.frames}


def content_classes(truth: list[dict], key: str) -> np.ndarray:
    """(N, 10) per second: 0 nothing, 1 + index of the video's class where `key` (shape/tone) is on."""
    names = sorted({t["category"] for t in truth})
    return np.array([[(1 + names.index(t["category"])) * (s in t[key]) for s in range(10)] for t in truth])


def centroid_accuracy(x: np.ndarray, truth: np.ndarray, fit: np.ndarray, score: np.ndarray) -> float:
    """Nearest-centroid accuracy of per-second features: centroids from rows `fit`, scored on rows `score`."""
    x = x.reshape(*x.shape[:2], -1)
    centroids = np.stack([x[fit][truth[fit] == k].mean(0) for k in range(truth.max() + 1)])
    dist = ((x[score][:, :, None] - centroids[None, None]) ** 2).sum(-1)
    return float((dist.argmin(-1) == truth[score]).mean())


def accuracy(args: argparse.Namespace, weights: dict[str, Path]) -> None:
    """Per-second test accuracy of A+V-att on the alignment set, per frames-per-second setting."""
    from avel.cli import main as avel
    from avel.features.extracted import ExtractedSet
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    size = args.image_size if args.image_size != 224 else ACCURACY_IMAGE_SIZE
    print(f"alignment set: {ACCURACY_SPLITS} videos of 10 s, distractor seconds per video {ACCURACY_DISTRACTORS}, "
          f"{size}-px frames, random weights, A+V-att, seed {args.seed}")
    print(f"{'duty':>5} {'fps':>4} {'shape seen %':>13} {'test accuracy %':>16} {'val accuracy %':>15} "
          f"{'audio-only ceiling %':>21}")
    for duty in args.duty:
        src = args.work_dir / f"align4_seed{args.seed}_duty{duty}"
        if not (src / "Annotations.txt").is_file():
            make_alignment_set(src, sum(ACCURACY_SPLITS.values()), ACCURACY_SPLITS, seed=args.seed, shape_duty=duty,
                               **ACCURACY_DISTRACTORS)
        for fps in args.frames_per_second:
            ds_dir = args.work_dir / f"{src.name}_fps{fps}_px{size}"
            if not (ds_dir / "audio_feature.h5").is_file():
                assert avel(["extract", "--videos", str(src), "--annotations", str(src / "Annotations.txt"),
                             "--out", str(ds_dir), "--vgg19-weights", str(weights["vgg19_keras"]), "--vggish-weights",
                             str(weights["vggish"]), "--frames-per-second", str(fps), "--image-size", str(size),
                             "--quiet"]) == 0
            ds = ExtractedSet(ds_dir)
            truth = json.loads((src / ALIGNMENT_TRUTH).read_text())
            seen = centroid_accuracy(ds.visual, content_classes(truth, "shape_seconds"), ds.split("train"),
                                     np.concatenate([ds.split("val"), ds.split("test")]))
            result = train(ds, ModelConfig(name="A+V-att", visual_grid=size // 32),
                           TrainConfig(epochs=15, patience=15, batch_size=4, lr=1e-2, seed=args.seed, num_threads=1),
                           ds_dir / "run", progress=False)
            ceiling = 100 * (1 - ACCURACY_DISTRACTORS["tone_only"] / 10)  # audio alone mislabels tone-only seconds
            print(f"{duty:>5} {fps:>4} {100 * seen:>13.1f} {result['test']['accuracy']:>16.1f} "
                  f"{result['val']['accuracy']:>15.1f} {ceiling:>21.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=1, help="clips to extract per setting")
    p.add_argument("--seconds", type=int, default=AVE_SECONDS, help="clip length (s); figures are scaled to 10 s")
    p.add_argument("--frames-per-second", type=int, nargs="+", default=[16], help="settings to compare")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=0, help="frames per VGG-19 pass (0: extractor default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--accuracy", action="store_true", help="measure accuracy on the alignment set instead of speed")
    p.add_argument("--duty", type=float, nargs="+", default=[1.0],
                   help="--accuracy: share of each event second the shape is visible")
    p.add_argument("--seed", type=int, default=1, help="--accuracy: alignment set and training seed")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "avel-bench-extract",
                   help="where the random weights and the rendered clip are cached")
    args = p.parse_args()
    device = resolve_device(args.device)
    weights = random_weight_files(args.work_dir / "weights")
    if args.accuracy:
        accuracy(args, weights)
        return
    clip = args.work_dir / f"clip_{args.seconds}s.mp4"
    if not clip.is_file():
        render_clip(clip, ClipSpec(seconds=args.seconds, fps=25, width=640, height=360,
                                   shape_seconds=set(range(0, args.seconds, 2)), tone_seconds={1, 2}))
    videos = [clip] * args.videos
    gflop_frame = 2 * conv_macs(VGG19_CFG, 3, args.image_size, args.image_size) / 1e9
    print(f"device: {device} ({torch.get_num_threads()} CPU threads)" if device.type == "cpu" else f"device: "
          f"{torch.cuda.get_device_name(device)}")
    print(f"clip: {args.seconds} s, 640x360 25 fps H.264 + AAC; {args.videos} video(s) per setting; "
          f"figures per 10-s video{' (scaled from ' + str(args.seconds) + ' s)' if args.seconds != AVE_SECONDS else ''}")
    print(f"VGG-19 to pool5 at {args.image_size}x{args.image_size}: {gflop_frame / 2:.2f} GMAC = {gflop_frame:.2f} GFLOP "
          "per frame (the usual '19.6 GFLOPs' counts multiply-adds)")
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (a shared machine makes "
              "absolute figures noisy; each ratio uses a matrix product timed right before and after)")
    batch = 8 if device.type == "cpu" else 64
    mm = [matmul_gflops(device)]
    layouts = vgg_layout_gflops(device, args.image_size, batch=batch)
    mm.append(matmul_gflops(device))
    print(f"matrix product ({MATMUL_N[device.type]}^2 float32): {np.mean(mm):.1f} GFLOP/s")
    print(f"VGG-19 alone (batch {batch}): channels-last {layouts['channels_last']:.1f} GFLOP/s "
          f"({layouts['channels_last'] / np.mean(mm):.0%} of matmul), NCHW {layouts['nchw']:.1f} GFLOP/s")
    print(f"{'fps':>4} {'s/video':>9} {'VGG GFLOP/s':>12} {'matmul':>7} {'VGG/matmul':>10} {'VGG':>5} {'VGGish':>7} "
          f"{'decode work':>11} {'decode wait':>11}")
    for fps in args.frames_per_second:
        before = matmul_gflops(device)
        r = run(videos, weights, fps, args)
        mm = (before + matmul_gflops(device)) / 2
        print(f"{fps:>4} {r['s_per_video']:>9.2f} {r['vgg_gflops']:>12.1f} {mm:>7.1f} {r['vgg_gflops'] / mm:>10.0%} "
              f"{r['vgg_share']:>5.0%} {r['vggish_share']:>7.0%} {r['decode_work_share']:>11.0%} "
              f"{r['decode_wait_share']:>11.0%}")
    print("shares are of wall time; decode work runs on a separate thread, decode wait is the part not "
          "hidden behind compute (the 'time spent decoding' that costs wall time)")


if __name__ == "__main__":
    main()
