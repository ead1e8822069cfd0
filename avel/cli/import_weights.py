"""`avel import-authors FILE` and `avel import-peer FILE --kind K`: foreign trained weights as a run directory.

Both commands are the one reader of avel.foreign (restricted unpickler, a key map per family, shape and
finiteness checks, an atomic run directory); they differ only in the families they accept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avel.cli.options import out_dir

# avel.foreign's families, named here so that --help imports no torch (tests/test_registry.py checks both lists)
AUTHORS_KINDS = ("A+V-att", "W-A+V-att", "DMRN")
PEER_KINDS = ("CMRAN", "W-CMRAN", "PSP", "W-PSP", "CMBS", "W-CMBS")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-authors", help="import the authors' trained AV_att.pt / AV_att_weak.pt / DMRN.pt",
                       description="Read a whole-module PyTorch checkpoint of the authors' networks (PyTorch 0.3 "
                                   "legacy format, or the zip format of current PyTorch) without executing anything "
                                   "in it, and write a run directory that `avel evaluate` and `avel localize` use. "
                                   "A file that names any other global is refused.")
    p.add_argument("file", type=Path, metavar="FILE", help="AV_att.pt, AV_att_weak.pt, DMRN.pt or a retrained one")
    p.add_argument("--out", type=out_dir, required=True, metavar="RUN_DIR", help="new (or empty) run directory")
    p.add_argument("--kind", choices=AUTHORS_KINDS, default=None,
                   help="expected network (default: read from the pickled class; a mismatch is an error)")
    p.set_defaults(func=_import, allowed=AUTHORS_KINDS)

    p = sub.add_parser("import-peer", help="import a CMRAN / PSP / CMBS checkpoint saved by its own training script",
                       description="Read what a later method's training script saves (a state dict, or a pickled "
                                   "whole module) without executing anything in it, map its parameter names to "
                                   "avel's model of the method, check every shape and value, and write a run "
                                   "directory that `avel evaluate`, `avel localize` and avel.load_model use.")
    p.add_argument("file", type=Path, metavar="FILE", help="the checkpoint file (.pt, .pth, .pth.tar)")
    p.add_argument("--kind", choices=PEER_KINDS, required=True,
                   help="the method (W-: its weakly-supervised model); a file of another method is an error")
    p.add_argument("--out", type=out_dir, required=True, metavar="RUN_DIR", help="new (or empty) run directory")
    p.set_defaults(func=_import, allowed=PEER_KINDS)


def _import(args: argparse.Namespace) -> int:
    from avel.foreign import families, import_run
    from avel.train.checkpoint import read_json

    out = import_run(args.file, args.out, kind=args.kind, allowed=args.allowed)
    record = read_json(out / "config.json")["imported"]
    known = f", the published {record['published_file']}" if record["published_file"] else ""
    print(f"imported {record['kind']} ({record['holds']}, {record['container']}; git blob sha1 "
          f"{record['git_blob_sha1']}{known})")
    print(f"run directory {out}: model {families()[record['kind']].model}; try `avel evaluate {out} --data DIR`")
    return 0
