"""Benchmark the feature store on a full-size (4143-row, 8.3 GB visual) AVE-Synth dataset.

Phases, each in its own process so that its peak resident memory is its own:
  generate  `avel data synth --videos 4143` (time)
  convert   first `AVEDataset.open(..).visual/.audio`: float64 HDF5 -> float16/float32 memmap cache
  pass      one pass over all 4143 rows in random order, batches of 64, cast to float32 (rows/s)
  reuse     a second open: the cache is trusted, not rebuilt (time)

Usage: .venv/bin/python benchmarks/bench_store.py [--dir DIR (default: TMPDIR/avel-bench)] [--videos 4143] [--keep]
The directory (about 10.5 GB with the cache) is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 64  # rows per training-like batch
RSS_LIMIT_GB = 3.0  # target of issue 2: one full pass under 3 GB resident


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def phase_generate(root: Path, videos: int) -> dict:
    from avel.data.synth import generate

    t0 = time.perf_counter()
    generate(root, videos=videos, seed=0, progress=False)
    return {"seconds": time.perf_counter() - t0,
            "visual_gb": (root / "visual_feature.h5").stat().st_size / 1e9}


def phase_convert(root: Path) -> dict:
    from avel.data.dataset import AVEDataset

    t0 = time.perf_counter()
    ds = AVEDataset.open(root, progress=False)
    ds.visual, ds.audio
    cache = ds.store.cache_dir
    return {"seconds": time.perf_counter() - t0,
            "cache_gb": sum(p.stat().st_size for p in cache.glob("*.npy")) / 1e9}


def phase_pass(root: Path) -> dict:
    import torch

    from avel.data.dataset import AVEDataset

    ds = AVEDataset.open(root, progress=False)
    order = np.random.default_rng(0).permutation(len(ds))
    t0 = time.perf_counter()
    total = 0.0
    for i in range(0, len(order), BATCH):
        rows = np.sort(order[i:i + BATCH])
        v = torch.as_tensor(ds.visual[rows]).float()  # (B, 10, 7, 7, 512)
        a = torch.as_tensor(ds.audio[rows])  # (B, 10, 128)
        total += float(v.sum()) + float(a.sum())
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows_per_s": len(order) / seconds, "checksum": total}


def phase_reuse(root: Path) -> dict:
    from avel.data.dataset import AVEDataset

    t0 = time.perf_counter()
    ds = AVEDataset.open(root, progress=False)
    ds.visual, ds.audio
    return {"seconds": time.perf_counter() - t0}


PHASES = {"generate": phase_generate, "convert": phase_convert, "pass": phase_pass, "reuse": phase_reuse}


def run_phase(name: str, root: Path, videos: int) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--dir", str(root), "--videos", str(videos)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "avel-bench")
    ap.add_argument("--videos", type=int, default=4143)
    ap.add_argument("--keep", action="store_true", help="keep the generated directory")
    ap.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        fn = PHASES[args.phase]
        res = fn(args.dir, args.videos) if args.phase == "generate" else fn(args.dir)
        print(json.dumps({**res, "peak_rss_gb": _peak_rss_gb()}))
        return
    try:
        results = {name: run_phase(name, args.dir, args.videos) for name in PHASES}
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    g, c, p, r = (results[k] for k in PHASES)
    print(f"AVE-Synth, {args.videos} videos: visual_feature.h5 {g['visual_gb']:.2f} GB")
    print(f"generate : {g['seconds']:7.1f} s   peak RSS {g['peak_rss_gb']:.2f} GB")
    print(f"convert  : {c['seconds']:7.1f} s   peak RSS {c['peak_rss_gb']:.2f} GB   cache {c['cache_gb']:.2f} GB")
    print(f"pass     : {p['seconds']:7.1f} s   peak RSS {p['peak_rss_gb']:.2f} GB   {p['rows_per_s']:.0f} rows/s "
          f"(random order, batches of {BATCH}, float32 tensors)")
    print(f"reuse    : {r['seconds']:7.2f} s   peak RSS {r['peak_rss_gb']:.2f} GB")
    ok = p["peak_rss_gb"] < RSS_LIMIT_GB
    print(f"full pass peak RSS {'<' if ok else '>='} {RSS_LIMIT_GB} GB: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
