"""`avel evaluate RUN_DIR`: segment accuracy, per-category accuracy, confusion matrix of a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from avel.cli.options import device
from avel.precision import PRECISION_HELP, PRECISIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run on a split (accuracy, per-category, confusion)",
                       description="Evaluate the checkpoint a run selected on validation. The dataset defaults to "
                                   "the one the run was trained on.")
    p.add_argument("run_dir", metavar="NAME|RUN_DIR",
                   help="run directory written by `avel train`, or a built-in model name (see avel models)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR", help="dataset directory (default: the run's)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object (accuracy, per_class, confusion, ...)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.set_defaults(func=_evaluate)


def format_report(r: dict[str, Any]) -> str:
    """Human-readable summary: the data, overall accuracy beside the majority-class and chance rates,
    per-category accuracy (marked n<3 where fewer than 3 videos back it), attention hit rate."""
    from avel.train.evaluate import MIN_CATEGORY_VIDEOS

    lines = []
    d = r.get("dataset")
    if d:
        lines.append(f"data: {d['name']} at {d.get('root')}" + (f" ({d['note']})" if d.get("synthetic") else ""))
    if r.get("training_data") == "different":
        lines.append("WARNING: this is not the data the run was trained on ("
                     + "; ".join(r.get("training_data_differences") or []) + ")")
    elif r.get("training_data") == "unknown":
        lines.append("note: the run predates training-data fingerprints; whether this is its training data is unknown")
    degenerate = (f" (degenerate: predicts {r['most_predicted_class']} on {r['most_predicted_share']:.1f}% of "
                  "seconds)") if r.get("degenerate") else ""
    lines.append(f"{r['model']} on {r['split']}: {r['accuracy']:.2f}%{degenerate} of {r['num_seconds']} seconds "
                 f"({r['num_videos']} videos); video-level {r['video_accuracy']:.2f}%")
    if r.get("majority_rate") is not None:
        lines.append(f"baselines: majority class ({r['majority_class']} everywhere) {r['majority_rate']:.2f}%, "
                     f"chance (1/{len(r['confusion']['labels'])} classes) {r['chance_rate']:.2f}%")
    if r.get("attention_hit_rate") is not None:
        lines.append(f"attention peak on the sounding object: {r['attention_hit_rate']:.1f}% of "
                     f"{r['attention_seconds']} event seconds (chance {r['attention_chance_rate']:.1f}%)")
    lines.append("per category (accuracy over the seconds of that category's videos; majority rate; videos):")
    width = max((len(k) for k in r["per_class"]), default=0)
    videos, major = r.get("per_class_videos") or {}, r.get("per_class_majority_rate") or {}
    for name, acc in r["per_class"].items():
        n = videos.get(name)
        few = f"  n<{MIN_CATEGORY_VIDEOS}" if n is not None and n < MIN_CATEGORY_VIDEOS else ""
        extra = f"  (majority {major[name]:6.2f}, {n} videos){few}" if name in major else ""
        lines.append(f"  {name:<{width}}  {acc:6.2f}{extra}")
    lines += format_confusion(r["confusion"])
    return "\n".join(lines)


def format_confusion(confusion: dict[str, Any]) -> list[str]:
    """The confusion matrix as text: one row per true label, columns numbered like the rows; labels that
    never occur and are never predicted are left out."""
    names, m = confusion["labels"], confusion["matrix"]
    keep = [i for i in range(len(names)) if sum(m[i]) or any(row[i] for row in m)]
    cell = max(3, *(len(str(m[i][j])) for i in keep for j in keep)) if keep else 3
    width = max((len(names[i]) for i in keep), default=0)
    lines = ["confusion matrix (seconds; rows: true label, columns: predicted, numbered like the rows):",
             f"  {'':>2}  {'':<{width}}  " + " ".join(f"{c:>{cell}}" for c in range(len(keep)))]
    for r, i in enumerate(keep):
        lines.append(f"  {r:>2}  {names[i]:<{width}}  " + " ".join(f"{m[i][j]:>{cell}}" for j in keep))
    return lines


def _evaluate(args: argparse.Namespace) -> int:
    from avel.train.evaluate import evaluate_run

    ds = None
    if args.data is not None:
        from avel.data.dataset import AVEDataset

        ds = AVEDataset.open(args.data)
    from avel.pretrained import resolve_model

    run_dir = resolve_model(args.run_dir, weights=()).run_dir  # a built-in name: downloaded and imported once
    result = evaluate_run(run_dir, ds, split=args.split, device=args.device, precision=args.precision)
    print(json.dumps(result) if args.json else format_report(result))
    return 0
