"""`avel localize VIDEO... --model RUN_DIR --out DIR`: events, exports, attention heatmaps and a page per video."""

from __future__ import annotations

import argparse
from pathlib import Path

from avel.cli.extract import add_extractor_options
from avel.cli.options import Number, nonneg_float, out_dir, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("localize", help="find audio-visual events in videos with a trained model",
                       description="Extract features from each VIDEO, run the model of RUN_DIR, and write events.json, "
                                   "events.csv / seconds.csv, events.vtt / events.srt subtitles, an Audacity label "
                                   "track (labels.txt), attention heatmaps (PNG per second + animated GIF) and "
                                   "index.html (the video with a clickable timeline). One VIDEO file writes into DIR; "
                                   "several, a folder or a list file write DIR/NAME/ per video (NAME: the file's "
                                   "stem, de-duplicated) and DIR/summary.json, load the model once, go on past a "
                                   "failing video (exit 1 if any failed), and skip videos whose outputs are already "
                                   "complete. Event spans are half-open [start, end) in seconds: start 3, end 7 = "
                                   "seconds 3..6 inclusive. Feature settings default to those the model was trained on.")
    p.add_argument("video", type=Path, nargs="+", metavar="VIDEO",
                   help="video file(s), folder(s) of videos, or list file(s) (.txt/.list: one path a line)")
    p.add_argument("--model", default=None, metavar="NAME|RUN_DIR",
                   help="a built-in model (see avel models; default authors-av-att, the AVE authors' A+V-att, "
                        "downloaded once) or a run directory from avel train")
    p.add_argument("--out", type=out_dir, required=True, metavar="DIR", help="output folder")
    p.add_argument("--json", action="store_true",
                   help="print events.json (one video) or summary.json (several) to stdout")
    p.add_argument("--window", type=positive_int, default=None,
                   help="seconds per inference window (default: the training clips' length, 10)")
    p.add_argument("--hop", type=positive_int, default=None, help="seconds between windows (default: half a window)")
    p.add_argument("--threshold", type=Number(float, 0.0, 1.0), default=0.0, metavar="P",
                   help="minimum probability of the event class for a second to count toward an event "
                        "(default 0: every second whose most probable class is an event counts)")
    p.add_argument("--min-duration", type=nonneg_float, default=0.0, metavar="S",
                   help="drop events shorter than S seconds (default 0: keep all)")
    p.add_argument("--no-pictures", action="store_true",
                   help="skip heatmaps and index.html (events.json, exports and features.h5 only)")
    p.add_argument("--redo", action="store_true", help="recompute videos whose outputs are already complete")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_extractor_options(p)
    p.set_defaults(func=_localize)


def _localize(args: argparse.Namespace) -> int:
    import json

    from avel.api import EXTRACTOR_OPTIONS, prepare
    from avel.inference.batch import localize_paths, single_video, summary_table
    from avel.inference.pipeline import OUTPUTS, LocalizeOptions, localize_video

    options = LocalizeOptions(window=args.window, hop=args.hop, threshold=args.threshold,
                              min_duration=args.min_duration, pictures=not args.no_pictures, redo=args.redo)
    options.validate()
    resolved, cfg = prepare(args.model, **{k: getattr(args, k) for k in EXTRACTOR_OPTIONS})
    if not single_video(args.video):
        summary = localize_paths(args.video, resolved.run_dir, args.out, cfg, options, progress=not args.quiet)
        print(json.dumps(summary, indent=2) if args.json else summary_table(summary))
        return 1 if summary["counts"]["failed"] else 0
    result = localize_video(args.video[0], resolved.run_dir, args.out, cfg, args.window, args.hop,
                            pictures=not args.no_pictures, threshold=args.threshold,
                            min_duration=args.min_duration, redo=args.redo, progress=not args.quiet)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "status"}, indent=2))
        return 0
    if result["status"] == "skipped":
        print(f"{args.out} already holds complete outputs for {args.video[0]} (--redo recomputes them)")
    for e in result["events"]:
        print(f"{e['span']}  {e['category']}  (confidence {e['confidence']:.2f})")
    if not result["events"]:
        print("no audio-visual event detected")
    print(f"wrote {args.out / (OUTPUTS['events'] if args.no_pictures else OUTPUTS['html'])}")
    return 0
