"""`avel data ...`: labels, synth, check."""

from __future__ import annotations

import argparse
from pathlib import Path

from avel.cli.options import int_range, nonneg_int, out_dir, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from avel.data.synth import DEFAULT_VIDEOS, FULL_SIZE, GENERATOR_VERSION, VERSIONS

    p = sub.add_parser("data", help="build and validate AVE dataset directories")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    lab = dsub.add_parser("labels", help="write labels.h5, mil_labels.h5, labels_closs.h5 from Annotations.txt")
    lab.add_argument("annotations", type=Path, help="Annotations.txt")
    lab.add_argument("--out", type=out_dir, required=True, help="output folder")
    lab.set_defaults(func=_labels)

    syn = dsub.add_parser(
        "synth", help="generate AVE-Synth, a synthetic dataset directory in the AVE release layout",
        description="Generate AVE-Synth: a synthetic stand-in for the AVE features, in exactly the released "
                    "layout (files, keys, shapes, dtypes, splits). Its numbers test the implementation, not the "
                    "paper's claims. Deterministic for a given seed; an interrupted run resumes.")
    syn.add_argument("--out", type=out_dir, required=True, help="output dataset directory")
    syn.add_argument("--videos", type=positive_int, default=DEFAULT_VIDEOS,
                     help=f"annotated videos (rows); default {DEFAULT_VIDEOS}, {FULL_SIZE} = AVE size (8.3 GB)")
    syn.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    syn.add_argument("--categories", type=int_range(2, 28), default=28,
                     help="use the first K of the 28 AVE categories (default 28; fewer learn faster on small sets)")
    syn.add_argument("--audio-maps", action="store_true",
                     help="also write audio_feature_map.h5 (N,10,6,4,512) for visual-guided audio attention")
    syn.add_argument("--generator", type=int, default=GENERATOR_VERSION, choices=sorted(VERSIONS),
                     help=f"generator version (default {GENERATOR_VERSION}; 1 reproduces earlier AVE-Synth data "
                          "byte for byte; docs/data.md describes both)")
    syn.add_argument("--no-progress", action="store_true", help="no progress bar")
    syn.set_defaults(func=_synth)

    chk = dsub.add_parser("check", help="validate a dataset directory and print a summary")
    chk.add_argument("dir", type=Path, help="dataset directory (AVE release layout)")
    chk.add_argument("--no-progress", action="store_true", help="no progress bar")
    chk.set_defaults(func=_check)


def _labels(args: argparse.Namespace) -> int:
    from avel.data.catalog import read_annotations
    from avel.data.labels import write_label_files

    from avel.io import output_lock, remove_temporaries

    catalog = read_annotations(args.annotations)
    with output_lock(args.out):
        remove_temporaries(args.out)
        paths = write_label_files(catalog, args.out)
    print(f"{len(catalog)} rows, {len(catalog.categories)} categories + background")
    for p in paths.values():
        print(f"wrote {p}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    import time

    from avel.data.synth import generate, read_marker

    t0 = time.perf_counter()
    out = generate(args.out, videos=args.videos, seed=args.seed, audio_maps=args.audio_maps,
                   categories=args.categories, progress=not args.no_progress, version=args.generator)
    meta = read_marker(out) or {}
    print(f"wrote AVE-Synth to {out}: {meta.get('videos')} videos ({meta.get('categories')} categories), "
          f"{meta.get('noisy_videos')} background-only, seed {meta.get('seed')}, generator v{meta.get('version')}, "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _check(args: argparse.Namespace) -> int:
    from avel.data.check import check_dataset, print_report

    print_report(check_dataset(args.dir, progress=not args.no_progress))
    return 0
