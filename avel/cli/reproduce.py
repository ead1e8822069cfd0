"""`avel reproduce`: regenerate the paper's tables (and the supplement's) with error bars."""

from __future__ import annotations

import argparse
from pathlib import Path

from avel.precision import PRECISION_HELP, PRECISIONS

from avel.cli.options import device, int_range, out_dir, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="train and evaluate every table's models over seeds; write report.md + results.json",
        description="Train and evaluate the models of Tables 1-3, the supplement's Tables 1 and 3, ED-TCN "
                    "and the later methods (CMRAN, PSP, CMBS beside A+V-att and DMRN: the sota table), "
                    "each over several seeds, and write REPORT_DIR/report.md and results.json. Finished runs "
                    "in REPORT_DIR are reused, so an interrupted reproduction continues where it stopped.")
    p.add_argument("--data", type=Path, default=None,
                   help="AVE dataset directory (default: generate AVE-Synth with audio maps into OUT/data)")
    p.add_argument("--out", type=out_dir, required=True, metavar="REPORT_DIR", help="report directory")
    p.add_argument("--seeds", type=positive_int, default=None, help="training runs per cell (default 3; --quick: 2 for Table 1, supplement Table 1, "
                        "ED-TCN and Table 3, 1 for the rest, the later methods included)")
    p.add_argument("--quick", action="store_true",
                   help="small AVE-Synth (280 videos), 3 epochs at batch 16 and lr 3e-3, 2 seeds for Table 1 and "
                        "seed 0 alone for Table 2's grid, the A' variants and the later methods: the whole pipeline "
                        "in minutes on 2 CPU cores")
    p.add_argument("--only", "--tables", dest="only", default=None, metavar="SECTIONS",
                   help="comma-separated subset of: table1, table2, supp_table1, supp_table3, edtcn, table3, "
                        "sota (A+V-att, DMRN, CMRAN, PSP, CMBS and their W- models side by side with "
                        "parameters, training time and inference speed)")
    p.add_argument("--cells", default=None, metavar="KEYS",
                   help="comma-separated cells to train, as the report names them (e.g. 'A,V-att,A+V-att gmu early')")
    p.add_argument("--videos", type=positive_int, default=None,
                   help="AVE-Synth size when generating (default 4143, the release's; --quick: 280)")
    p.add_argument("--categories", type=int_range(2, 28), default=None,
                   help="AVE-Synth categories when generating (default all 28; at least 10 videos each)")
    p.add_argument("--epochs", type=positive_int, default=None, help="cap on training epochs per run")
    p.add_argument("--device", type=device, default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads per run (default: torch's, or 1 with --workers > 1; "
                        "1 is faster on a busy machine)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="training runs in parallel, each single-threaded (default 1; --quick: 2)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="train without per-channel input standardization (reproduces runs made before it existed)")
    p.add_argument("--recipes", default=None, metavar="NAMES",
                   help="compare training recipes instead: train Table 1 (or --cells, which may also name CMRAN, "
                        "PSP, CMBS and their W- variants) under each of these (avel, authors, cmran, psp, cmbs; e.g. "
                        "avel,authors or avel,psp --cells PSP,W-PSP; default 2 seeds) and report accuracy and wall "
                        "time side by side; a recipe whose loss a model refuses is skipped for it")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.set_defaults(func=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    from avel.io import output_lock, remove_temporaries
    from avel.report.pipeline import REPORT_FILE, RESULTS_FILE, Options, parse_sections, reproduce
    from avel.report.recipes import parse_recipes, reproduce_recipes

    opts = Options(out=args.out, data=args.data, seeds=args.seeds, quick=args.quick,
                   sections=parse_sections(args.only),
                   cells=None if args.cells is None else tuple(k.strip() for k in args.cells.split(",") if k.strip()),
                   videos=args.videos, categories=args.categories,
                   epochs=args.epochs, standardize=args.standardize,
                   device=args.device, precision=args.precision, threads=args.threads, workers=args.workers, progress=not args.quiet)
    with output_lock(args.out):  # one reproduction per report folder; a killed one's temporaries go first
        remove_temporaries(args.out)
        results = (reproduce(opts) if args.recipes is None
                   else reproduce_recipes(opts, parse_recipes(args.recipes)))
    t = results["timing"]
    print(f"{t['runs_trained']} runs trained, {t['runs_reused']} reused, {t['wall_seconds']:.0f} s")
    print(f"wrote {args.out / REPORT_FILE}")
    print(f"wrote {args.out / RESULTS_FILE}")
    return 0
