"""`avel data ...`: labels, synth, check."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build and validate AVE dataset directories")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    lab = dsub.add_parser("labels", help="write labels.h5, mil_labels.h5, labels_closs.h5 from Annotations.txt")
    lab.add_argument("annotations", type=Path, help="Annotations.txt")
    lab.add_argument("--out", type=Path, required=True, help="output folder")
    lab.set_defaults(func=_labels)


def _labels(args: argparse.Namespace) -> int:
    from avel.data.catalog import read_annotations
    from avel.data.labels import write_label_files

    catalog = read_annotations(args.annotations)
    paths = write_label_files(catalog, args.out)
    print(f"{len(catalog)} rows, {len(catalog.categories)} categories + background")
    for p in paths.values():
        print(f"wrote {p}")
    return 0
