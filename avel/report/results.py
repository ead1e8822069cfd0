"""results.json: every measured number of a reproduction, beside the paper's, in one document.

`build_results` turns per-seed run records into the document; `avel.report.markdown.render_report`
turns the document into report.md and reads nothing else, so no number in the report is typed by
hand. Each table entry is already resolved to one of:

- measured: `{"mean": m, "std": s, "n": seeds, "cell": key}` (std = sample standard deviation
  over seeds, ddof=1; 0.0 with a single seed and shown without "±"), plus `"degenerate": true` and
  `"degenerate_seeds": k` when k of the seeds predicted one class on more than 95% of test seconds
  (their number says nothing about the model), and for a per-category entry `"videos": n` with
  `"few_videos": true` when fewer than 3 test videos back it (no spread is shown then);
- a baseline: `{"baseline": value, "what": "majority" | "chance"}` (rows every accuracy table carries:
  the most frequent label of the test seconds predicted everywhere, and 1 / number of classes);
- published: `{"paper": value}`;
- a plain figure: `{"number": value, "digits": d}` (parameters, segments per second) or a short text
  `{"text": "..."}` (the source of a published number);
- absent: `{"missing": "why"}` (not run, not available), or `null` where the paper prints "-".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from avel import __version__
from avel.data.catalog import AVE_CATEGORIES, SHORT_NAMES
from avel.report import cells as C
from avel.report import paper

FORMAT = "avel-reproduce/1"
NOT_RUN = {"missing": "not run"}
NO_AUDIO_MAPS = "not available: the dataset has no audio maps"
MIN_CATEGORY_VIDEOS = 3  # per-category entries over fewer test videos are marked n<3 (avel.train.evaluate's rule)


def summarize(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean and sample standard deviation (ddof=1) of the finite values; None when there are none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(xs)}


def summarize_cell(cell: C.Cell, runs: list[dict]) -> dict[str, Any]:
    """Aggregate one cell's per-seed run records (see avel.report.runner) over seeds."""
    runs = sorted(runs, key=lambda r: r["seed"])
    acc = summarize([r["accuracy"] for r in runs])
    num_cls = max((len(r.get("per_class") or []) for r in runs), default=0)
    per_class = [summarize([(r.get("per_class") or [None] * num_cls)[k] for r in runs]) for k in range(num_cls)]
    degenerate = [bool(r.get("degenerate")) for r in runs]
    hits = [r.get("attention_hit_rate") for r in runs]
    attention = None
    if any(h is not None for h in hits):
        attention = summarize(hits)
        attention["chance"] = next(r["attention_chance"] for r in runs if r.get("attention_hit_rate") is not None)
    return {
        "label": cell.key,
        "model": cell.model_kwargs(),
        "seeds": [r["seed"] for r in runs],
        "accuracy": [r["accuracy"] for r in runs],
        "val_accuracy": [r.get("val_accuracy") for r in runs],
        "epochs": [r.get("epochs") for r in runs],
        "seconds": [r.get("seconds") for r in runs],
        "train_seconds": [r.get("train_seconds") for r in runs],
        "summary": acc,
        "degenerate": degenerate,
        "most_predicted_share": [r.get("most_predicted_share") for r in runs],
        "test_selection": test_selection_summary(runs),
        "per_class": per_class,
        "attention_hit_rate": attention,
        "run_dirs": [r.get("run_dir") for r in runs],
    }


def test_selection_summary(runs: list[dict]) -> dict[str, Any] | None:
    """Over seeds: the validation-selected test accuracy (what avel reports), the best test accuracy
    over the validation points (what selecting on the test split would report) and their difference."""
    pairs = [(r["accuracy"], r["best_test_accuracy"], r.get("test_selection_difference"))
             for r in runs if r.get("best_test_accuracy") is not None]
    if not pairs:
        return None
    return {"selected": summarize([a for a, _, _ in pairs]), "best": summarize([b for _, b, _ in pairs]),
            "difference": summarize([d if d is not None else b - a for a, b, d in pairs])}


def _measured(cells: dict[str, dict], key: str, category: int | None = None,
              videos: int | None = None) -> dict | None:
    if key not in cells:
        return dict(NOT_RUN)
    per_class = cells[key]["per_class"] or []
    s = cells[key]["summary"] if category is None else (per_class[category] if category < len(per_class) else None)
    if s is None:
        return dict(NOT_RUN)
    entry = {**s, "cell": key}
    k = sum(cells[key].get("degenerate") or [])
    if k:
        entry.update(degenerate=True, degenerate_seeds=k)
    if videos is not None:
        entry["videos"] = videos
        if videos < MIN_CATEGORY_VIDEOS:
            entry["few_videos"] = True
    return entry


def _baseline_rows(ctx: dict, width: int, columns: list[int] | None = None) -> list[dict]:
    """The majority-class and chance rows of an accuracy table (none without the dataset's baselines):
    the value in each of `columns` (indices into a row of `width` entries; default: the first)."""
    b = ctx.get("baselines")
    if not b:
        return []
    rows = []
    for what, label in (("majority", f"majority class ({b['majority_class']} everywhere)"),
                        ("chance", f"chance (1/{b['num_classes']} classes)")):
        entries: list[dict | None] = [None] * width
        for col in columns or [0]:
            entries[col] = {"baseline": b[f"{what}_rate"], "what": what}
        rows.append({"label": label, "entries": entries, "baseline": what})
    return rows


def _paper(value: float | None) -> dict | None:
    return None if value is None else {"paper": value}


def _table1(cells: dict[str, dict], ctx: dict) -> dict:
    rows = []
    for weak in (False, True):
        for m in C.TABLE1_MODELS:
            key = C.table1_cell(m, weak).key
            rows.append({"label": key, "entries": [_measured(cells, key), _paper(paper.TABLE1[key])]})
    rows += _baseline_rows(ctx, 2)
    return {"title": "Table 1: supervised and weakly-supervised event localization",
            "caption": "Overall segment accuracy (%) on the test split. Audio-visual models fuse by "
                       "concatenating the LSTM outputs; W- models are trained from video-level labels (MIL).",
            "header": ["Model", "avel", "paper"], "rows": rows}


def _table2(cells: dict[str, dict], ctx: dict) -> dict:
    by = {(stage, method): cell.key for stage, method, cell in C.table2_entries()}
    rows = []
    for method in paper.TABLE2_METHODS:
        entries = []
        for stage in paper.TABLE2_STAGES:
            key = by.get((stage, method))
            entries += [None, None] if key is None else [_measured(cells, key), _paper(paper.TABLE2[stage][method])]
        rows.append({"label": method, "entries": entries})
    rows += _baseline_rows(ctx, 2 * len(paper.TABLE2_STAGES), list(range(0, 2 * len(paper.TABLE2_STAGES), 2)))
    header = ["Method"] + [f"{s} {w}" for s in paper.TABLE2_STAGES for w in ("avel", "paper")]
    return {"title": "Table 2: fusion methods x early / late / decision fusion",
            "caption": "Overall segment accuracy (%). Every method fuses the audio feature with the "
                       "audio-guided attended visual feature (the A+V-att network); late Concat is Table 1's "
                       "A+V-att; DMRFE exists only as late fusion.",
            "header": header, "rows": rows}


def _supp_table1(cells: dict[str, dict], ctx: dict) -> dict:
    ours = ["A", "V", "A+V", "A+V-att"]
    published = {"A": "A", "V": "Vs", "A+V": "AVs"}  # our model -> supplement row
    rows = []
    b = ctx.get("baselines") or {}
    videos, majority = b.get("category_videos"), b.get("category_majority_rate")
    for k, category in enumerate(ctx["categories"]):  # the dataset's categories, in class order
        ave = AVE_CATEGORIES.index(category) if category in AVE_CATEGORIES else None
        n = videos[k] if videos and k < len(videos) else None
        entries = []
        for m in ours:
            entries.append(_measured(cells, m, k, videos=n))
            if m in published:
                entries.append(None if ave is None else _paper(paper.SUPP_TABLE1[published[m]][ave]))
        if b:
            rate = majority[k] if majority and k < len(majority) else None
            entries += [None if rate is None else {"baseline": rate, "what": "majority"},
                        None if n is None else {"count": n}]
        rows.append({"label": category if ave is None else SHORT_NAMES[ave], "entries": entries})
    header = ["Category", "A avel", "A paper", "V avel", "Vs paper", "A+V avel", "AVs paper", "A+V-att avel"]
    caption = ("Segment accuracy (%) of each event category on the test split. The supplement's Vs is "
               "the V model; its AVs (overall 71.4) is A+V. The supplement has no per-category A+V-att row.")
    if b:
        header += ["majority", "test videos"]
        caption += (" majority: the share of the category's test seconds that carry its most frequent label "
                    f"(the accuracy of predicting that label everywhere). Entries backed by fewer than "
                    f"{MIN_CATEGORY_VIDEOS} test videos are marked n<{MIN_CATEGORY_VIDEOS} and show no spread.")
    return {"title": "Supplement Table 1: per-category accuracy", "caption": caption, "header": header,
            "rows": rows}


def _supp_table3(cells: dict[str, dict], ctx: dict) -> dict:
    rows = []
    for m in C.SUPP3_MODELS:
        measured = ({"missing": NO_AUDIO_MAPS} if m in C.AUDIO_MAP_MODELS and not ctx["audio_maps"]
                    else _measured(cells, m))
        rows.append({"label": m, "entries": [measured, _paper(paper.SUPP_TABLE3[m])]})
    rows += _baseline_rows(ctx, 2)
    return {"title": "Supplement Table 3: attention variants",
            "caption": "Overall accuracy (%). A' models read a spatial audio map (the supplement uses VGGish's "
                       "last pooling layer); A'-att uses visual-guided audio attention, A'+V-co-att both attentions.",
            "header": ["Model", "avel", "paper"], "rows": rows}


def _edtcn(cells: dict[str, dict], ctx: dict) -> dict:
    rows = [{"label": "ED-TCN", "entries": [_measured(cells, "ED-TCN"), _paper(paper.EDTCN)]},
            {"label": "V", "entries": [_measured(cells, "V"), _paper(paper.TABLE1["V"])]}]
    rows += _baseline_rows(ctx, 2)
    return {"title": "ED-TCN baseline (Section 6.3)",
            "caption": "Overall accuracy (%) of the encoder-decoder temporal convolutional network on the V "
                       "features, beside the V model on the same features.",
            "header": ["Model", "avel", "paper"], "rows": rows}


def _table3(cells: dict[str, dict], ctx: dict) -> dict:
    runs = ctx.get("table3_runs") or []
    rows = []
    for method in ("AVDLN", "DCCA"):
        entries = []
        for task in ("A2V", "V2A"):
            s = summarize([r[method][task] for r in runs]) if runs else None
            entries += [dict(NOT_RUN) if s is None else s, _paper(paper.TABLE3[method][task])]
        rows.append({"label": method, "entries": entries})
    if runs and all("chance" in r for r in runs):
        chance = [summarize([r["chance"][t] for r in runs]) for t in ("A2V", "V2A")]
        rows.append({"label": "chance", "entries": [chance[0], None, chance[1], None]})
    caption = "Exact-match accuracy (%) on the cross-modality test split."
    if runs:
        caption += (f" {runs[0].get('evaluated', '?')} test videos evaluated, "
                    f"{runs[0].get('skipped', '?')} skipped.")
    return {"title": "Table 3: cross-modality localization", "caption": caption,
            "header": ["Method", "A2V avel", "A2V paper", "V2A avel", "V2A paper"], "rows": rows}


def _selection_price(cell: dict | None) -> dict | None:
    """The cell's best-over-validation-points minus validation-selected test accuracy (summarize_cell's
    test_selection), mean ± std over seeds."""
    if cell is None:
        return dict(NOT_RUN)
    sel = cell.get("test_selection")
    return dict(sel["difference"]) if sel else {"missing": "not recorded"}


def _sota(cells: dict[str, dict], ctx: dict) -> dict:
    speed = ctx.get("speed") or {}
    rows = []
    for label, cell in C.sota_rows():
        value, source = paper.SOTA_PUBLISHED[label]
        c = cells.get(cell.key)
        train = summarize(c.get("train_seconds") or []) if c else None
        s = (speed.get("models") or {}).get(label)
        entries = [_measured(cells, cell.key), _paper(value), _selection_price(c),
                   {"number": s["parameters"], "digits": 0} if s else dict(NOT_RUN),
                   train if train else (dict(NOT_RUN) if c is None else {"missing": "not recorded"}),
                   {"number": s["segments_per_second"], "digits": 0} if s else dict(NOT_RUN),
                   {"text": source}]
        rows.append({"label": label, "cell": cell.key, "entries": entries})
    rows += _baseline_rows(ctx, 7)
    caption = ("Overall segment accuracy (%) on the test split, mean ± std over seeds; every model is trained "
               "the same way on the same data (the avel recipe) and every run keeps the checkpoint chosen on the "
               "**validation** split. *paper*: the published number, measured on the real AVE features with the "
               "checkpoint of best **test** accuracy (the authors' selection), from the work named under "
               "*published in*. *price of test selection*: the best test accuracy over the run's validation "
               "points minus the validation-selected one (mean ± std over seeds), what selecting on the test "
               "split would have added. *train s/run*: the training loop's wall time per run (runs trained in "
               "parallel share the cores). DMRN is Table 2's late DMRN cell; the paper has no weakly supervised "
               "DMRN, so there is no W-DMRN row.")
    if speed:
        caption += (f" *parameters* and *segments/s*: fp32 inference without gradients over {speed['videos']} "
                    f"random 10-s clips in batches of {speed['batch']}, fastest of {speed['reps']} interleaved "
                    f"rounds, on {speed['machine']}.")
    if ctx.get("synthetic"):
        caption += (" **AVE-Synth is synthetic**: these accuracies test the implementation and are not comparable "
                    "with the published ones.")
    return {"title": "The paper's models beside the later methods (CMRAN, PSP, CMBS)", "caption": caption,
            "header": ["Model", "avel (val-selected)", "paper", "price of test selection", "parameters",
                       "train s/run", "segments/s", "published in"],
            "rows": rows, "notes": [f"{k}: {v}" for k, v in paper.SOTA_REFERENCES.items()]}


TABLE_BUILDERS: dict[str, Callable[[dict, dict], dict]] = {
    "table1": _table1, "table2": _table2, "supp_table1": _supp_table1,
    "supp_table3": _supp_table3, "edtcn": _edtcn, "table3": _table3, "sota": _sota,
}


# The paper's orderings between two entries ("left beats right"), checked on every reproduction.
# Each held in the paper (Tables 1-2 and Section 6.3).
CLAIMS: tuple[tuple[str, str], ...] = (
    ("A", "V"), ("A+V", "A"), ("A+V", "V"), ("V-att", "V"), ("A+V-att", "A+V"),
    ("A+V-att", "A"), ("A+V-att", "V"), ("W-A+V", "W-A"), ("W-A+V", "W-V"), ("W-V-att", "W-V"),
    ("A", "W-A"), ("V", "W-V"), ("V-att", "W-V-att"), ("A+V", "W-A+V"), ("A+V-att", "W-A+V-att"),
    ("A+V-att dmrn late", "A+V-att"), ("DMRFE", "A+V-att dmrn late"), ("V", "ED-TCN"),
)


def _published(key: str) -> float | None:
    """The paper's overall accuracy for a cell key, wherever the paper prints it."""
    if key in paper.TABLE1:
        return paper.TABLE1[key]
    if key == C.EDTCN_CELL.key:
        return paper.EDTCN
    for stage, method, cell in C.table2_entries():
        if cell.key == key:
            return paper.TABLE2[stage][method]
    return paper.SUPP_TABLE3.get(key)


def claim_rows(cells: dict[str, dict]) -> list[dict]:
    """For each of the paper's orderings whose two cells both ran: does it hold here? An ordering that
    involves a degenerate cell (one class predicted almost everywhere, in any seed) is not comparable:
    `holds` is None and `not_comparable` names the degenerate side(s)."""
    out = []
    for left, right in CLAIMS:
        if left in cells and right in cells and cells[left]["summary"] and cells[right]["summary"]:
            a, b = _measured(cells, left), _measured(cells, right)
            row = {"left": left, "right": right, "avel": [a, b],
                   "paper": [_published(left), _published(right)], "holds": a["mean"] > b["mean"],
                   **margin(a, b)}
            degenerate = [k for k, e in ((left, a), (right, b)) if e.get("degenerate")]
            if degenerate:
                row.update(holds=None, not_comparable=f"degenerate: {', '.join(degenerate)}")
            out.append(row)
    return out


def margin(a: dict, b: dict) -> dict[str, Any]:
    """How far apart two entries are: `margin` = a's mean minus b's, `spread` = the larger of their
    standard deviations, `beyond_spread` = |margin| > spread (None when either rests on one seed)."""
    gap = a["mean"] - b["mean"]
    if min(a.get("n", 1), b.get("n", 1)) < 2:
        return {"margin": gap, "spread": None, "beyond_spread": None}
    spread = max(a["std"], b["std"])
    return {"margin": gap, "spread": spread, "beyond_spread": abs(gap) > spread}


def test_selection_rows(cells: dict[str, dict]) -> list[dict]:
    """Per cell: validation-selected test accuracy, best test accuracy over the validation points, and
    the difference (mean ± std over seeds), for the cells whose runs recorded test-at-validation curves."""
    out = []
    for key, c in cells.items():
        s = c.get("test_selection")
        if s:
            k = sum(c.get("degenerate") or [])
            out.append({"label": key, **s, **({"degenerate_seeds": k} if k else {})})
    return out


# Cells whose attention hit rate the report shows (results.json has it for every attention cell).
ATTENTION_REPORTED: tuple[str, ...] = ("V-att", "A+V-att", "W-V-att", "W-A+V-att", "A+V-att dmrn late", "DMRFE",
                                       "A'+V-co-att")


def attention_rows(cells: dict[str, dict]) -> list[dict]:
    """Attention hit rate vs chance of the ATTENTION_REPORTED cells that measured one (AVE-Synth only)."""
    out = []
    for key in ATTENTION_REPORTED:
        c = cells.get(key, {})
        a = c.get("attention_hit_rate")
        if a is not None:
            out.append({"label": key, "hit_rate": {k: a[k] for k in ("mean", "std", "n")}, "chance": a["chance"]})
    return out


def build_results(
    *,
    dataset: dict[str, Any],
    settings: dict[str, Any],
    sections: Sequence[str],
    cells: Sequence[C.Cell],
    cell_runs: dict[str, list[dict]],
    table3_runs: list[dict] | None = None,
    figures: Sequence[dict] = (),
    timing: dict[str, Any] | None = None,
    speed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results.json document. `cell_runs[key]` holds one record per finished seed; `speed` is the
    sota table's avel.models.speed measurement (label -> parameters, segments/s, with its settings)."""
    summaries = {c.key: summarize_cell(c, cell_runs[c.key]) for c in cells if cell_runs.get(c.key)}
    ctx = {"audio_maps": bool(dataset.get("audio_maps")), "table3_runs": table3_runs,
           "baselines": dataset.get("baselines"), "speed": speed, "synthetic": bool(dataset.get("synthetic")),
           "categories": list(dataset.get("categories") or AVE_CATEGORIES)}
    return {
        "format": FORMAT,
        "avel_version": __version__,
        "dataset": dict(dataset),
        "settings": dict(settings),
        "timing": dict(timing or {}),
        "sections": list(sections),
        "cells": summaries,
        "tables": {s: TABLE_BUILDERS[s](summaries, ctx) for s in sections},
        "claims": claim_rows(summaries),
        "test_selection": test_selection_rows(summaries),
        "attention": attention_rows(summaries),
        "figures": list(figures),
        **({"speed": dict(speed)} if speed else {}),
    }
