"""`avel localize VIDEO --model RUN_DIR --out DIR`: events, attention heatmaps and a report for any video."""

from __future__ import annotations

import argparse
from pathlib import Path

from avel.cli.extract import add_extractor_options
from avel.cli.options import out_dir, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("localize", help="find audio-visual events in a video with a trained model",
                       description="Extract features from VIDEO, run the model of RUN_DIR, and write events.json, "
                                   "attention heatmaps (PNG per second + animated GIF) and a self-contained index.html. "
                                   "Feature settings default to those the model was trained on.")
    p.add_argument("video", type=Path, metavar="VIDEO")
    p.add_argument("--model", default=None, metavar="NAME|RUN_DIR",
                   help="a built-in model (see avel models; default authors-av-att, the AVE authors' A+V-att, "
                        "downloaded once) or a run directory from avel train")
    p.add_argument("--out", type=out_dir, required=True, metavar="DIR", help="output folder")
    p.add_argument("--json", action="store_true", help="print events.json to stdout")
    p.add_argument("--window", type=positive_int, default=None,
                   help="seconds per inference window (default: the training clips' length, 10)")
    p.add_argument("--hop", type=positive_int, default=None, help="seconds between windows (default: half a window)")
    p.add_argument("--no-pictures", action="store_true", help="skip heatmaps and index.html (events.json only)")
    add_extractor_options(p)
    p.set_defaults(func=_localize)


def _localize(args: argparse.Namespace) -> int:
    import json

    from avel.api import EXTRACTOR_OPTIONS, prepare
    from avel.errors import AvelError
    from avel.localize.pipeline import OUTPUTS, localize_video
    from avel.localize.runinfo import extractor_record, run_document, training_length

    resolved, cfg = prepare(args.model, **{k: getattr(args, k) for k in EXTRACTOR_OPTIONS})
    doc = run_document(resolved.run_dir)
    info, _ = extractor_record(resolved.run_dir, doc)
    window = args.window or training_length(doc, info)
    hop = args.hop or max(1, window // 2)
    if window < 1 or hop < 1:
        raise AvelError(f"--window and --hop must be >= 1, got {window} and {hop}")
    result = localize_video(args.video, resolved.run_dir, args.out, cfg, window, hop, pictures=not args.no_pictures)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for e in result["events"]:
            print(f"{e['start']:>4}-{e['end']:<4} s  {e['category']}  (confidence {e['confidence']:.2f})")
        if not result["events"]:
            print("no audio-visual event detected")
        report = args.out / (OUTPUTS["events"] if args.no_pictures else OUTPUTS["html"])
        print(f"wrote {report}")
    return 0
