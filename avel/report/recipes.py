"""`avel reproduce --recipes avel,authors`: Table 1 trained under each training recipe, side by side.

Every Table 1 cell (or the `--cells` subset) is trained once per seed and recipe
(avel.train.recipes) on the same data; the report puts each recipe's test accuracy (mean ± std over
seeds) beside the wall time of its training loop (the trainer's `train_seconds`: epochs with their
validation, not the final evaluation), and the ratio of the mean times. Runs live in
`OUT/runs/recipe-NAME/CELL/seedK` and are reused like the main reproduction's.

The cells are Table 1's by default; `--cells` may also name the later methods (CMRAN, PSP, CMBS and
their W- variants), e.g. `--recipes avel,psp --cells PSP,W-PSP`. A recipe whose loss a cell's model
cannot use (the "authors" recipe sets MultiLabelSoftMarginLoss; CMRAN, PSP and CMBS train with their
own `method_loss` and refuse it) is not trained for that cell: the report marks the pair "skipped"
and says why, and the other pairs train as usual.

Read the accuracies with each recipe's checkpoint selection in mind: the authors' supervised script
keeps the checkpoint with the best *test* accuracy, as do the CMRAN, PSP and CMBS recipes (their
scripts do), which flatters them (docs/reproduce.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from avel.errors import AvelError
from avel.io import write_json, write_text
from avel.report import cells as C
from avel.report.markdown import degenerate_mark
from avel.report.pipeline import (REPORT_FILE, RESULTS_FILE, RUNS_DIR, Backend, Options, data_fingerprint,
                                  dataset_info, n_workers, prepare_data, result_fields, run_record, select_cells,
                                  train_overrides, training_status)
from avel.report.results import test_selection_summary
from avel.report.runner import Job, run_jobs


def parse_recipes(text: str) -> tuple[str, ...]:
    """`avel,authors` -> ("avel", "authors"); unknown names are an error listing the valid ones."""
    from avel.train.recipes import RECIPES

    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [n for n in names if n not in RECIPES]
    if unknown or not names:
        raise AvelError(f"--recipes: unknown recipe(s) {', '.join(unknown) or '(none given)'}; "
                        f"valid: {', '.join(RECIPES)}")
    return names


def comparison_cells() -> list[C.Cell]:
    """The cells --cells may name: Table 1's, then the later methods' (supervised, then W-)."""
    later = [C.table1_cell(m, weak) for weak in (False, True) for m in C.LATER_MODELS]
    return C.section_cells("table1") + later


def skip_reason(recipe: str, cell: C.Cell) -> str | None:
    """Why `cell` cannot train under `recipe` (its model has its own loss and the recipe sets
    another, which the trainer refuses), or None when it can."""
    from avel.models.registry import ModelConfig, create_model
    from avel.train.config import TrainConfig
    from avel.train.losses import has_method_loss
    from avel.train.recipes import recipe_fields

    loss = recipe_fields(recipe, cell.weak).get("loss", TrainConfig().loss)
    if loss == TrainConfig().loss or not has_method_loss(create_model(ModelConfig(**cell.model_kwargs()))):
        return None
    return f"{cell.model} trains with its own loss; the {recipe} recipe's loss '{loss}' does not apply to it"


def recipe_job(recipe: str, cell: C.Cell, seed: int, ds: Any, data_fp: str, opts: Options,
               backend: Backend) -> Job:
    """One training + test-evaluation run of `cell` under `recipe`."""
    from avel.train.recipes import recipe_config

    from avel.train.config import RUNTIME_FIELDS

    # runtime settings only (threads, precision): --quick's batch size and lr would change the recipes
    overrides = {k: v for k, v in train_overrides(opts).items() if k in RUNTIME_FIELDS}
    if opts.epochs is not None:  # --epochs caps every recipe alike (the report says so)
        overrides["epochs"] = opts.epochs
    train_cfg = recipe_config(recipe, cell.weak, seed=seed, device=opts.device, **overrides)
    model_kwargs = cell.model_kwargs()
    run_dir = opts.out / RUNS_DIR / f"recipe-{recipe}" / cell.slug / f"seed{seed}"
    fp = {"recipe": recipe, "model": model_kwargs, "train": result_fields(train_cfg), "data": data_fp}

    def execute(run_dir: Path) -> dict[str, Any]:
        return run_record(backend.train(ds, model_kwargs, train_cfg, run_dir), list(ds.catalog.categories),
                          run_dir, opts.out)

    return Job(group=f"{recipe}|{cell.key}", seed=seed, label=f"{cell.key} [{recipe}] (seed {seed})",
               run_dir=run_dir, fingerprint=fp, execute=execute, resumes=True, status=training_status)


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()) if len(arr) else None,
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "n": int(len(arr)),
            "values": [float(v) for v in arr]}


def compare(records: dict[str, list[dict[str, Any]]], recipes: tuple[str, ...],
            cells: list[C.Cell], skipped: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per cell: per recipe the test accuracy and training wall time over seeds (or, for a
    pair in `skipped` ("recipe|cell" -> reason), why it was not trained), and each recipe's mean time
    divided by the first recipe's."""
    skipped = skipped or {}
    rows = []
    for cell in cells:
        row: dict[str, Any] = {"cell": cell.key, "recipes": {}}
        for r in recipes:
            recs = records.get(f"{r}|{cell.key}", [])
            row["recipes"][r] = {
                "accuracy": _stats([x["accuracy"] for x in recs]),
                "train_seconds": _stats([x["train_seconds"] for x in recs if x.get("train_seconds") is not None]),
                "epochs": [x.get("epochs") for x in recs], "best_epoch": [x.get("best_epoch") for x in recs],
                "test_selection": test_selection_summary(recs),
                "degenerate": sum(bool(x.get("degenerate")) for x in recs),
                "skipped": skipped.get(f"{r}|{cell.key}"),
            }
        base = row["recipes"][recipes[0]]["train_seconds"]["mean"]
        row["time_ratio"] = {r: (row["recipes"][r]["train_seconds"]["mean"] / base
                                 if base and row["recipes"][r]["train_seconds"]["mean"] is not None else None)
                             for r in recipes}
        rows.append(row)
    return rows


def _pm(s: dict[str, Any], digits: int = 1) -> str:
    """`mean ± std`, or `mean` alone over one seed: reads both _stats (std None) and
    avel.report.results.summarize (std 0.0) summaries by their `n`."""
    if s["mean"] is None:
        return "n/a"
    spread = s["std"] is not None and s.get("n", 2) > 1
    return f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if spread else "")


def render(results: dict[str, Any]) -> str:
    """report.md of a recipe comparison."""
    from avel.train.recipes import RECIPES

    recipes, data = results["recipes"], results["dataset"]
    synthetic = " (synthetic: AVE-Synth numbers test the implementation, not the paper)" if data["synthetic"] else ""
    lines = [f"# Training recipes compared on Table 1{synthetic}", "",
             f"Data: {data['name']}{' — synthetic' if data['synthetic'] else ''}, {data['videos']} videos "
             f"(train/val/test {data['splits']['train']}/{data['splits']['val']}/{data['splits']['test']}); "
             f"seeds {results['settings']['seeds']}; device {results['settings']['device']}; "
             f"machine: {results['settings']['machine']}.", "",
             "Test accuracy: per-second, % (mean ± std over seeds). Time: the training loop's wall time per run "
             "(s, mean ± std; epochs and their validation, not the final evaluation). Ratio: mean time over "
             f"the {recipes[0]} recipe's." + _baselines(data), ""]
    head = "| model | " + " | ".join(f"{r} accuracy | {r} time (s) | {r} epochs" for r in recipes) + " | " + \
        " | ".join(f"time {r}/{recipes[0]}" for r in recipes[1:]) + " |"
    lines += [head, "|---|" + "---:|" * (3 * len(recipes) + len(recipes) - 1)]
    for row in results["rows"]:
        cells = []
        for r in recipes:
            x = row["recipes"][r]
            if x.get("skipped"):
                cells += ["skipped", "-", "-"]
                continue
            ep = ",".join(str(e) for e in x["epochs"] if e is not None) or "-"
            mark = degenerate_mark(x.get("degenerate", 0), x["accuracy"].get("n", 1))
            cells += [_pm(x["accuracy"]) + mark, _pm(x["train_seconds"], 0), ep]
        ratios = [f"{row['time_ratio'][r]:.2f}" if row["time_ratio"][r] is not None else "n/a" for r in recipes[1:]]
        lines.append(f"| {row['cell']} | " + " | ".join(cells + ratios) + " |")
    skips = [(row["cell"], r, row["recipes"][r]["skipped"]) for row in results["rows"] for r in recipes
             if row["recipes"][r].get("skipped")]
    if skips:
        lines += ["", "Skipped (not trained): " + "; ".join(f"{c} under {r}: {why}" for c, r, why in skips) + "."]
    lines += _selection_table(results)
    lines += ["", "What each recipe selects on:", ""]
    lines += [f"- **{r}**: {RECIPES[r].description}" for r in recipes]
    if results["settings"].get("epochs_cap") is not None:
        lines += ["", f"Every recipe was capped at {results['settings']['epochs_cap']} epochs (--epochs)."]
    t = results["timing"]
    lines += ["", f"{t['runs_trained']} runs trained, {t['runs_reused']} reused; {t['wall_seconds']:.0f} s in all.", ""]
    return "\n".join(lines)


def _baselines(data: dict[str, Any]) -> str:
    b = data.get("baselines") or {}
    if b.get("majority_rate") is None:
        return ""
    return (f" Baselines on the test split: majority class ({b['majority_class']} everywhere) "
            f"{b['majority_rate']:.1f}%, chance {b['chance_rate']:.1f}%.")


def _selection_table(results: dict[str, Any]) -> list[str]:
    """Per cell and recipe: the test accuracy of the checkpoint the recipe selected, the best test accuracy
    over its validation points (what selecting on the test split would report), and their gap."""
    rows = [(row["cell"], r, row["recipes"][r]["test_selection"]) for row in results["rows"]
            for r in results["recipes"] if row["recipes"][r].get("test_selection")
            and not row["recipes"][r].get("skipped")]
    if not rows:
        return []
    out = ["", "## The price of selecting on the test split", "",
           "Every run also recorded its test accuracy at each validation point (never used for any decision). "
           "*selected*: the test accuracy of the checkpoint the recipe keeps; *best on test*: the highest test "
           "accuracy over the validation points, what keeping the checkpoint by test accuracy reports; "
           "*difference*: best minus selected (mean ± std over seeds). The authors' supervised recipe and the "
           "cmran, psp and cmbs recipes select on the test split, so their difference is 0 by construction.", "",
           "| model | recipe | selected | best on test | difference |", "|---|---|---:|---:|---:|"]
    for cell, r, t in rows:
        out.append(f"| {cell} | {r} | {_pm(t['selected'])} | {_pm(t['best'])} | {_pm(t['difference'], 2)} |")
    return out


def machine(device: str) -> str:
    """The CPU, or the GPU for a cuda device, the comparison ran on, as avel.precision names it."""
    from avel.precision import machine_name

    return machine_name("cuda" if device.startswith("cuda") else "cpu")


def reproduce_recipes(opts: Options, recipes: tuple[str, ...], backend: Backend | None = None) -> dict[str, Any]:
    """Train Table 1 (or opts.cells of it) under every recipe and seed; write report.md and results.json."""
    backend = backend or Backend()
    t0 = time.perf_counter()
    n_seeds = opts.seeds if opts.seeds is not None else 2
    if n_seeds < 1:
        raise AvelError(f"--seeds must be at least 1, got {n_seeds}")
    seeds = list(range(n_seeds))
    cells = C.section_cells("table1") if opts.cells is None else select_cells(comparison_cells(), opts.cells)
    skipped = {f"{r}|{c.key}": why for c in cells for r in recipes if (why := skip_reason(r, c)) is not None}
    if len(skipped) == len(cells) * len(recipes):
        raise AvelError("--recipes: no recipe applies to the chosen cells (" + "; ".join(skipped.values()) + ")")
    opts.out.mkdir(parents=True, exist_ok=True)
    ds, root = prepare_data(opts, backend)
    info = dataset_info(ds, root)
    fp = data_fingerprint(ds)
    # cell by cell, so that an interrupted comparison has whole rows
    jobs = [recipe_job(r, c, s, ds, fp, opts, backend) for c in cells for r in recipes for s in seeds
            if f"{r}|{c.key}" not in skipped]
    stats = run_jobs(jobs, progress=opts.progress, workers=n_workers(opts))
    results = {
        "kind": "recipe comparison", "dataset": info, "recipes": list(recipes),
        "settings": {"seeds": seeds, "device": opts.device, "machine": machine(opts.device), "epochs_cap": opts.epochs,
                     "workers": n_workers(opts), "synthetic": info["synthetic"]},
        "rows": compare(stats.records, recipes, cells, skipped),
        "skipped": [{"recipe": k.split("|", 1)[0], "cell": k.split("|", 1)[1], "reason": v} for k, v in skipped.items()],
        "timing": {"wall_seconds": time.perf_counter() - t0, "runs_trained": stats.trained,
                   "runs_reused": stats.reused, "train_seconds": stats.seconds},
    }
    write_json(opts.out / RESULTS_FILE, results)
    write_text(opts.out / REPORT_FILE, render(results))
    return results
