"""`avel import-authors FILE --out RUN_DIR`: the authors' trained PyTorch network as an avel run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from avel.cli.options import out_dir

KIND_CHOICES = ("A+V-att", "W-A+V-att", "DMRN")  # avel.authors.KINDS (kept here so --help imports no torch)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-authors", help="import the authors' trained AV_att.pt / AV_att_weak.pt / DMRN.pt",
                       description="Read a whole-module PyTorch checkpoint of the authors' networks (PyTorch 0.3 "
                                   "legacy format, or the zip format of current PyTorch) without executing anything "
                                   "in it, and write a run directory that `avel evaluate` and `avel localize` use. "
                                   "A file that names any other global is refused.")
    p.add_argument("file", type=Path, metavar="FILE", help="AV_att.pt, AV_att_weak.pt, DMRN.pt or a retrained one")
    p.add_argument("--out", type=out_dir, required=True, metavar="RUN_DIR", help="new (or empty) run directory")
    p.add_argument("--kind", choices=KIND_CHOICES, default=None,
                   help="expected network (default: read from the pickled class; a mismatch is an error)")
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from avel.authors import KINDS, import_authors
    from avel.train.checkpoint import read_json

    out = import_authors(args.file, args.out, kind=args.kind)
    record = read_json(out / "config.json")["imported"]
    known = f", the authors' {record['authors_file']}" if record["authors_file"] else ""
    print(f"imported {record['kind']} ({record['pickled_class']}, {record['container']}; git blob sha1 "
          f"{record['git_blob_sha1']}{known})")
    print(f"run directory {out}: model {KINDS[record['kind']].model}; try `avel evaluate {out} --data DIR`")
    return 0
