"""The report's figures, drawn from finished runs: per-category bars, training curves, attention maps.

Each figure is described in results.json (`title`, `path` relative to the report directory,
`caption`); a figure whose runs are missing (e.g. `--only table2`) is simply not drawn.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from avel.data.catalog import AVE_CATEGORIES, SHORT_NAMES
from avel.report import figures, paper
from avel.report.cells import Cell
from avel.report.results import summarize

FIGURES_DIR = "figures"
PER_CATEGORY_MODELS = ("A", "V", "A+V-att")  # the issue's bars (supplement Table 1's rows, plus attention)
CURVE_MODELS = ("A", "V", "V-att", "A+V", "A+V-att", "A+V-att dmrn late", "DMRFE")
ATTENTION_MODELS = ("A+V-att", "V-att")  # first one that ran draws the attention grid
ATTENTION_VIDEOS = 4  # rows of the attention grid
AUDIO_ATTENTION_MODELS = ("A'-att", "A'+V-co-att")  # models with visual-guided audio attention (supplement Fig. 1)


def short_names(ds: Any) -> list[str]:
    """The supplement's short name of each of the dataset's categories (by name), else the name itself."""
    return [SHORT_NAMES[AVE_CATEGORIES.index(c)] if c in AVE_CATEGORIES else c for c in ds.catalog.categories]


def published_per_category(ds: Any, row: str) -> list[float]:
    """The supplement's Table 1 row `row` for each of the dataset's categories, matched by name
    (NaN, drawn as no tick, for a category AVE does not have)."""
    values = paper.SUPP_TABLE1[row]
    return [values[AVE_CATEGORIES.index(c)] if c in AVE_CATEGORIES else float("nan") for c in ds.catalog.categories]


def _first_run(records: dict[str, list[dict]], key: str) -> dict | None:
    runs = records.get(key) or []
    return min(runs, key=lambda r: r["seed"]) if runs else None


def draw_per_category(out: Path, ds: Any, records: dict[str, list[dict]]) -> dict | None:
    series = {}
    for key in PER_CATEGORY_MODELS:
        runs = records.get(key) or []
        if not runs or not runs[0].get("per_class"):
            continue
        stats = [summarize([r["per_class"][k] for r in runs]) for k in range(len(runs[0]["per_class"]))]
        series[key] = ([None if s is None else s["mean"] for s in stats],
                       [None if s is None else s["std"] for s in stats])
    if not series:
        return None
    rel = f"{FIGURES_DIR}/per_category.png"
    published = {ours: published_per_category(ds, row) for row, ours in paper.SUPP_TABLE1_MODELS.items()
                 if ours in series}
    if not any(c in AVE_CATEGORIES for c in ds.catalog.categories):
        published = {}
    figures.per_category_bars(out / rel, short_names(ds), series, reference=published)
    ticks = f"; black ticks: the supplement's Table 1 for {', '.join(published)}" if published else ""
    return {"title": "Per-category accuracy", "path": rel,
            "caption": f"Test accuracy of each event category for {', '.join(series)} (mean over seeds, "
                       f"error bars: standard deviation){ticks}."}


def read_curve(run_dir: Path, column: str = "val_accuracy") -> tuple[list[int], list[float]] | None:
    """(epochs, values) from a run's curves.csv, or None when it has none."""
    path = run_dir / "curves.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [int(r["epoch"]) for r in rows], [float(r[column]) for r in rows]


def draw_curves(out: Path, records: dict[str, list[dict]]) -> dict | None:
    series = {}
    for key in CURVE_MODELS:
        run = _first_run(records, key)
        curve = read_curve(out / run["run_dir"]) if run else None
        if curve:
            series[key] = curve
    if not series:
        return None
    rel = f"{FIGURES_DIR}/curves.png"
    figures.curves(out / rel, series)
    return {"title": "Training curves", "path": rel,
            "caption": "Per-second validation accuracy after each epoch (first seed). The tested checkpoint is the "
                       "epoch with the best validation score: per-second accuracy for supervised models, "
                       "video-level (MIL-pooled) accuracy for W- models; each run's own curves.png shows both "
                       "and its loss curves."}


def _rows(arr: Any, rows: np.ndarray, dtype: Any = None) -> np.ndarray:
    from avel.train.data import read_rows

    return read_rows(arr, rows, dtype)


def pick_videos(ds: Any, rows: np.ndarray, n: int) -> np.ndarray:
    """Up to n test rows of distinct categories, preferring events shorter than the clip (so the grid
    shows attention with and without an event)."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    mask = _rows(ds.event_mask, rows)  # (N, T)
    classes = _rows(ds.mil_labels, rows).argmax(-1)  # (N,)
    partial = (mask > 0).sum(-1) < mask.shape[-1]
    picked: list[int] = []
    for want_partial in (True, False):
        for i in np.flatnonzero(partial == want_partial):
            if len(picked) < n and classes[i] not in {classes[j] for j in picked}:
                picked.append(int(i))
    return rows[sorted(picked)]


def draw_attention(out: Path, ds: Any, records: dict[str, list[dict]]) -> dict | None:
    key = next((k for k in ATTENTION_MODELS if records.get(k)), None)
    if key is None:
        return None
    from avel.models.registry import model_spec
    from avel.train.checkpoint import load_run
    from avel.train.evaluate import predict

    run = _first_run(records, key)
    model, cfg, _ = load_run(out / run["run_dir"])
    rows = pick_videos(ds, np.asarray(ds.split("test")), ATTENTION_VIDEOS)
    inputs = {k: _rows(getattr(ds, k), rows, np.float32) for k in model_spec(cfg.name).inputs}
    _, attention = predict(model, **inputs)  # (V, T, 49)
    if attention is None:
        return None
    v, t, k = attention.shape
    g = int(round(k ** 0.5))
    cells = getattr(ds, "object_cells", None)
    gt = _rows(cells, rows) if cells is not None else None  # (V, T) flat cell, -1 none
    names = short_names(ds)
    titles = [f"{names[c]} (row {r})" for c, r in zip(_rows(ds.mil_labels, rows).argmax(-1), rows)]
    rel = f"{FIGURES_DIR}/attention.png"
    figures.attention_grid(out / rel, attention.reshape(v, t, g, g), titles, gt_cells=gt,
                           seconds_labels=_rows(ds.event_mask, rows) > 0)
    where = ("the red box marks the ground-truth cell of the sounding object (AVE-Synth)" if gt is not None
             else "feature-only data has no frames to draw beneath the maps")
    return {"title": f"Audio-guided visual attention ({key})", "path": rel,
            "caption": f"7x7 attention maps of {key} (first seed) for {v} test videos, one column per second "
                       f"(* marks event seconds); {where}. Compare the paper's Figure 5."}


def audio_attention_maps(model: Any, inputs: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray | None:
    """The model's visual-guided audio attention for `inputs` (V rows): (V, T, H, W), or None if it has none."""
    import torch

    model = model.eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in inputs.items()})
    if out.audio_attention is None:
        return None
    w = out.audio_attention.float().cpu().numpy()  # (V, T, H*W), rows sum to 1
    return w.reshape(*w.shape[:2], *shape)


def draw_audio_attention(out: Path, ds: Any, records: dict[str, list[dict]]) -> dict | None:
    """The supplement's Figure 1: where A'-att / A'+V-co-att listen in each second's audio map."""
    key = next((k for k in AUDIO_ATTENTION_MODELS if records.get(k)), None)
    if key is None or getattr(ds, "audio_map", None) is None:
        return None
    from avel.models.attention_variants import audio_map_shape
    from avel.models.registry import model_spec
    from avel.train.checkpoint import load_run

    run = _first_run(records, key)
    model, cfg, _ = load_run(out / run["run_dir"])
    rows = pick_videos(ds, np.asarray(ds.split("test")), ATTENTION_VIDEOS)
    inputs = {k: _rows(getattr(ds, k), rows, np.float32) for k in model_spec(cfg.name).inputs}
    H, W, _ = audio_map_shape(cfg)
    maps = audio_attention_maps(model, inputs, (H, W))
    if maps is None:
        return None
    names = short_names(ds)
    titles = [f"{names[c]} (row {r})" for c, r in zip(_rows(ds.mil_labels, rows).argmax(-1), rows)]
    rel = f"{FIGURES_DIR}/audio_attention.png"
    figures.audio_attention_grid(out / rel, maps, titles, seconds_labels=_rows(ds.event_mask, rows) > 0, model=key)
    return {"title": f"Visual-guided audio attention ({key})", "path": rel,
            "caption": f"Attention of {key} (first seed) over the {H} x {W} time x mel cells of each second's "
                       f"audio map (VGGish pool5) for {len(rows)} test videos, one column per second (* marks "
                       "event seconds). Compare the supplement's Figure 1."}


def draw_figures(*, out: Path, dataset: Any, cells: list[Cell], records: dict[str, list[dict]]) -> list[dict]:
    """Every figure the finished runs allow; returns their results.json descriptions."""
    drawn = [draw_per_category(out, dataset, records), draw_curves(out, records),
             draw_attention(out, dataset, records), draw_audio_attention(out, dataset, records)]
    return [d for d in drawn if d is not None]
