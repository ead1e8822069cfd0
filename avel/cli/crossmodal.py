"""`avel crossmodal train|evaluate`: cross-modality localization (A2V, V2A) with AVDLN or DCCA."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from avel.cli.options import device, nonneg_int, out_dir, positive_float, positive_int

SPLIT_CHOICES = ("train", "val", "test")  # the match splits: train_match, val_match, test_match


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crossmodal", help="cross-modality localization: AVDLN / DCCA, A2V and V2A (Table 3)",
                       description="Find the l-second segment of one modality that is synchronized with a "
                                   "given l-second segment of the other (Section 5 of the paper).")
    csub = p.add_subparsers(dest="crossmodal_command", metavar="SUBCOMMAND", required=True)

    t = csub.add_parser("train", help="train AVDLN or DCCA on the train match split",
                        description="Train on train_match, keep the epoch with the best mean A2V/V2A accuracy on "
                                    "val_match (the test split is never used). Re-running the same command resumes "
                                    "an interrupted run; a finished run is left as it is.")
    t.add_argument("--data", type=Path, required=True, metavar="DIR", help="AVE dataset directory")
    t.add_argument("--out", type=out_dir, required=True, metavar="RUN_DIR", help="run directory to write")
    t.add_argument("--method", choices=("avdln", "dcca"), default="avdln", help="network and objective (avdln)")
    t.add_argument("--epochs", type=positive_int, default=None, help="epochs (20)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="AVDLN pairs per step (8)")
    t.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (1e-3)")
    t.add_argument("--seed", type=nonneg_int, default=None, help="random seed (0)")
    t.add_argument("--shift-to", choices=("background", "any"), default=None,
                   help="AVDLN: where shifted negatives move the audio or visual second (background)")
    t.add_argument("--cca-dim", type=positive_int, default=None, help="DCCA: canonical directions kept (16)")
    t.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda, cuda:N or auto")
    t.add_argument("--quiet", action="store_true", help="no progress display")
    t.set_defaults(func=_train)

    e = csub.add_parser("evaluate", help="A2V / V2A exact-start accuracy of a run or of the authors' Keras weights",
                        description="For every video of the split with a short event (0 < l < 10 s), the event's "
                                    "audio span is searched in the visual track (A2V) and the reverse (V2A) by a "
                                    "sliding window (eq. 8); a prediction counts when its start is exact.")
    e.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="run directory of `crossmodal train`")
    e.add_argument("--keras-weights", type=Path, metavar="FILE",
                   help="evaluate the authors' Keras AVDLN weights file instead (cmm_model_weights.h5)")
    e.add_argument("--data", type=Path, required=True, metavar="DIR", help="AVE dataset directory")
    e.add_argument("--split", default="test", choices=SPLIT_CHOICES, help="match split to evaluate (test)")
    e.add_argument("--json", action="store_true", help="print the results as JSON")
    e.add_argument("--per-video", action="store_true", help="also list true and predicted start seconds per video")
    e.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda, cuda:N or auto")
    e.set_defaults(func=_evaluate)

    q = csub.add_parser("localize", help="localize one query span of one video (sliding-window scores)",
                        description="Take seconds [START, START+LENGTH) of one modality of catalog row ROW and "
                                    "score every window of the other modality by its summed distance (eq. 8).")
    q.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="run directory of `crossmodal train`")
    q.add_argument("--keras-weights", type=Path, metavar="FILE", help="use the authors' Keras AVDLN weights")
    q.add_argument("--data", type=Path, required=True, metavar="DIR", help="AVE dataset directory")
    q.add_argument("--row", type=nonneg_int, required=True, help="catalog row (Annotations.txt line index, 0-based)")
    q.add_argument("--start", type=nonneg_int, required=True, help="first second of the query (0-based)")
    q.add_argument("--length", type=positive_int, required=True, help="query length in seconds")
    q.add_argument("--direction", choices=("A2V", "V2A"), default="A2V",
                   help="A2V: audio query, search the visual track (default); V2A: the reverse")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda, cuda:N or auto")
    q.set_defaults(func=_localize)


# CLI option -> CrossModalTrainConfig field
TRAIN_OPTIONS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "seed": "seed"}


def _train(args: argparse.Namespace) -> int:
    from avel.crossmodal.data import CrossModalData, open_dataset
    from avel.crossmodal.models import CrossModalConfig
    from avel.crossmodal.train import CrossModalTrainConfig, train_run
    from avel.train.distributed import resolve_device

    device = resolve_device(args.device)
    train_kw = {f: getattr(args, o) for o, f in TRAIN_OPTIONS.items() if getattr(args, o) is not None}
    if args.shift_to is not None:
        train_kw["shift_into_background"] = args.shift_to == "background"
    train_cfg = CrossModalTrainConfig(**train_kw)
    train_cfg.validate()
    model_cfg = CrossModalConfig(method=args.method, **({"cca_dim": args.cca_dim} if args.cca_dim is not None else {}))
    model_cfg.validate()
    ds = open_dataset(args.data, progress=not args.quiet)
    train, val = CrossModalData.from_dataset(ds, "train_match"), CrossModalData.from_dataset(ds, "val_match")
    metrics = train_run(train, val, args.out, model_cfg, train_cfg,
                        device=str(device), progress=not args.quiet)
    best = metrics["history"][metrics["best_epoch"] - 1]
    print(f"{args.method}: selected epoch {metrics['best_epoch']} of {len(metrics['history'])} "
          f"(val_match: A2V {_pct(best['val_A2V'])}, V2A {_pct(best['val_V2A'])} over {best['val_evaluated']} videos)")
    print(f"wrote {args.out}  (test it: avel crossmodal evaluate {args.out} --data {args.data})")
    return 0


def _load(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """(model, description, device) from RUN_DIR or --keras-weights (exactly one)."""
    from avel.crossmodal.checkpoint import load_model
    from avel.crossmodal.keras_import import load_keras_avdln
    from avel.errors import AvelError
    from avel.train.distributed import resolve_device

    if (args.run_dir is None) == (args.keras_weights is None):
        raise AvelError("give either a RUN_DIR or --keras-weights FILE (exactly one)")
    device = resolve_device(args.device)
    if args.keras_weights is not None:
        return load_keras_avdln(args.keras_weights).to(device), f"AVDLN, Keras weights {args.keras_weights}", device
    model, cfg = load_model(args.run_dir, device)
    return model, f"{cfg['model']['method'].upper()}, run {args.run_dir}", device


def _evaluate(args: argparse.Namespace) -> int:
    from avel.crossmodal.data import CrossModalData, open_dataset
    from avel.crossmodal.evaluate import evaluate_model

    model, source, device = _load(args)
    ds = open_dataset(args.data, progress=not args.json)  # keep stdout pure JSON
    data = CrossModalData.from_dataset(ds, args.split)
    result = evaluate_model(model, data, device)
    out = {"model": source, "data": str(args.data), "split": data.name, **result.to_dict(per_video=args.per_video)}
    if args.per_video:
        ids = {a.row: a.video_id for a in ds.catalog.rows}
        for v in out["videos"]:
            v["video_id"] = ids.get(v["row"], "")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(_format(out))
    return 0


def _localize(args: argparse.Namespace) -> int:
    import numpy as np

    from avel.crossmodal.data import CrossModalData, open_dataset
    from avel.crossmodal.evaluate import distance_matrices
    from avel.crossmodal.localize import localize, window_scores
    from avel.errors import AvelError

    model, source, device = _load(args)
    ds = open_dataset(args.data, progress=not args.json)
    if not 0 <= args.row < len(ds.catalog):
        raise AvelError(f"row {args.row} is outside the catalog (0..{len(ds.catalog) - 1})", args.data)
    rows = np.array([args.row])
    data = CrossModalData(np.asarray(ds.audio[rows], np.float32), np.asarray(ds.visual_vec[rows], np.float32),
                          np.asarray(ds.event_mask[rows], np.float32), rows, f"row {args.row}")
    dist = distance_matrices(model, data, device)[0]  # (T, T): [visual second, audio second]
    best = localize(dist, args.start, args.length, args.direction)  # validates the span
    query = dist[:, args.start:args.start + args.length].T if args.direction == "A2V" \
        else dist[args.start:args.start + args.length, :]
    scores = window_scores(query)
    a = ds.catalog.rows[args.row]
    out = {"model": source, "row": args.row, "video_id": a.video_id, "event": [a.start, a.end],
           "direction": args.direction, "query": [args.start, args.start + args.length], "predicted_start": best,
           "scores": [float(x) for x in scores]}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    searched = {"A2V": "visual", "V2A": "audio"}[args.direction]
    print(f"{source}\nrow {args.row} ({a.video_id}, event [{a.start}, {a.end}) s): "
          f"{args.direction} query [{args.start}, {args.start + args.length}) s")
    for t, sc in enumerate(scores):
        print(f"  {searched} start {t:>2}: summed distance {sc:9.4f}{'  <- best' if t == best else ''}")
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.2f}%"


def _format(out: dict[str, Any]) -> str:
    """Plain-text report: accuracies, counts, optional per-video table (0-based start seconds)."""
    by = out["skipped_by_reason"]
    lines = [f"{out['model']}",
             f"{out['split']} of {out['data']}: {out['evaluated']} videos evaluated, {out['skipped']} skipped "
             f"(no event {by['no_event']}, full-length event {by['full_length']}, "
             f"non-contiguous {by['non_contiguous']})",
             f"A2V     {_pct(out['A2V'])}   (visual localization from an audio query)",
             f"V2A     {_pct(out['V2A'])}   (audio localization from a visual query)",
             f"chance  {_pct(out['chance'])}   (uniformly random start)"]
    if "videos" in out:
        lines.append("")
        lines.append(f"{'row':>5}  {'video':<13} {'start':>5} {'len':>3}  {'A2V':>3}    {'V2A':>3}")
        for v in out["videos"]:
            mark = {True: "ok", False: "--"}
            lines.append(f"{v['row']:>5}  {v['video_id']:<13} {v['start']:>5} {v['length']:>3}  "
                         f"{v['a2v']:>3} {mark[v['a2v'] == v['start']]} {v['v2a']:>3} {mark[v['v2a'] == v['start']]}")
    return "\n".join(lines)
