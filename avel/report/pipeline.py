"""`avel reproduce`: train and evaluate every table's cells over seeds, then write the report.

Steps: open (or generate) the dataset; list the cells the chosen sections need; run one resumable
job per cell and seed (avel.report.runner) plus one cross-modal job per seed for Table 3; draw the
figures; build results.json; render report.md from it.

The heavy parts (training, evaluation, Table 3, dataset generation) are reached through a
`Backend`, so the orchestration and the report can be tested with fakes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avel.errors import AvelError
from avel.io import write_json, write_text
from avel.report import cells as C
from avel.report.runner import Job, run_jobs

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
RUNS_DIR = "runs"
DATA_DIR = "data"
SYNTH_SEED = 0  # AVE-Synth generator seed (the data stay fixed across training seeds)

# --quick: a smoke test of the whole pipeline that finishes in minutes on 2 CPU cores.
DEFAULT_SEEDS = 3  # runs per cell of a full reproduction
QUICK_VIDEOS = 280  # AVE-Synth rows (10 per category)
QUICK_SEEDS = 2  # the smallest number that gives a standard deviation
# --quick trains QUICK_SEEDS seeds only for the cells of these sections (Table 1's orderings need a
# spread; ED-TCN and Table 3 are cheap); the cells of the other sections (Table 2's fusion grid, the
# supplement's attention variants and the later methods of the sota table) get seed 0 alone, shown
# without a "±" (the sota table's A+V-att and W-A+V-att keep Table 1's two seeds when Table 1 runs too).
QUICK_SPREAD_SECTIONS = ("table1", "supp_table1", "edtcn", "table3")
QUICK_WORKERS = 2  # parallel single-threaded runs (capped at the CPU count)
# Few epochs; small batches and a 3x learning rate so that they still make useful progress (on the
# quick AVE-Synth v1 without input standardization A+V-att reached ~61% test accuracy in 3 epochs this
# way, ~34% with the defaults; on v2 with standardized inputs ~79%).
QUICK_TRAIN = {"epochs": 3, "batch_size": 16, "lr": 3e-3}
# --quick trains the later methods (CMRAN, PSP, CMBS: 6-7x A+V-att's parameters, 3-6x its cost per
# second of video) for this many epochs, seed 0 alone, so that the whole quick run stays within minutes
# (on the quick AVE-Synth 3 epochs of the six took ~180 CPU-s, as much as a third of the rest).
QUICK_LATER_EPOCHS = 2
# The sota table's inference speed (avel.models.speed.measure): random clips, batch, interleaved rounds.
SPEED = {"videos": 64, "batch": 16, "reps": 5}
QUICK_SPEED = {"videos": 16, "batch": 16, "reps": 5}  # a few seconds on 2 idle cores


@dataclass
class Options:
    """What `avel reproduce` was asked to do."""

    out: Path  # report directory
    data: Path | None = None  # dataset directory; None = generate AVE-Synth into out/data
    seeds: int | None = None  # training runs per cell (seeds 0..seeds-1); None = DEFAULT_SEEDS (quick: QUICK_SEEDS)
    quick: bool = False  # small AVE-Synth, QUICK_SEEDS seeds, QUICK_TRAIN settings
    sections: tuple[str, ...] = C.SECTIONS  # which tables to produce (--only)
    cells: tuple[str, ...] | None = None  # restrict training to these cell keys (--cells); None = all
    videos: int | None = None  # AVE-Synth size when generating; None = synth's full size (quick: QUICK_VIDEOS)
    categories: int | None = None  # AVE-Synth categories when generating; None = all 28
    epochs: int | None = None  # override the training config's epoch cap
    standardize: bool = True  # False: TrainConfig.standardize=False (--no-standardize), inputs fed unscaled
    device: str = "cpu"
    precision: str = "auto"  # compute precision of every run (avel.precision): auto, fp32, bf16
    threads: int | None = None  # torch CPU threads per training run (None: torch's default; 1 with workers > 1)
    workers: int | None = None  # training runs in parallel (None: 1, --quick: QUICK_WORKERS)
    progress: bool = True


@dataclass
class Backend:
    """The heavy operations, injectable for tests. Defaults call avel.data / avel.train / avel.crossmodal."""

    open_dataset: Callable[..., Any] | None = None  # (root, progress) -> dataset
    generate_synth: Callable[..., Path] | None = None  # (out, videos, categories, seed, progress) -> root
    make_train_config: Callable[..., Any] | None = None  # (seed, device, overrides) -> TrainConfig
    train: Callable[..., dict] | None = None  # (dataset, model kwargs, train config, run_dir) -> results
    run_table3: Callable[..., dict] | None = None  # (dataset, out_dir, seed, quick, device) -> Table 3 results
    figures: Callable[..., list[dict]] | None = None  # (out, dataset, cells, records) -> figure descriptions
    measure_speed: Callable[..., dict] | None = None  # (model kwargs by label, settings) -> avel.models.speed record

    def __post_init__(self) -> None:
        defaults = {"open_dataset": _open_dataset, "generate_synth": _generate_synth,
                    "make_train_config": _make_train_config, "train": _train,
                    "run_table3": _run_table3, "figures": _figures, "measure_speed": _measure_speed}
        for name, fn in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, fn)


# --------------------------------------------------------------------------- default backend


def _open_dataset(root: Path, progress: bool) -> Any:
    """Open the dataset and fill its feature cache now, so the cache's own progress bar runs before
    (not inside) the reproduction's display."""
    from avel.data.dataset import AVEDataset

    ds = AVEDataset.open(root, progress=progress)
    for name in ("audio", "visual", "visual_vec", "audio_map", "noisy"):
        getattr(ds, name)
    return ds


def _generate_synth(out: Path, videos: int, categories: int, seed: int, progress: bool) -> Path:
    from avel.data.synth import generate

    return generate(out, videos=videos, categories=categories, seed=seed, audio_maps=True, progress=progress)


def _make_train_config(seed: int, device: str, overrides: dict[str, Any]) -> Any:
    """avel.train's defaults with the seed, device and any overrides (e.g. --quick's epochs)."""
    from avel.train.config import TrainConfig

    cfg = dataclasses.replace(TrainConfig(), seed=seed, device=device, **overrides)
    cfg.validate()
    return cfg


def result_fields(cfg: Any) -> dict[str, Any]:
    """The training settings that change a run's numbers (not device or thread count)."""
    return cfg.result_fields() if hasattr(cfg, "result_fields") else dict(cfg)


def _train(dataset: Any, model_kwargs: dict, train_cfg: Any, run_dir: Path) -> dict:
    """Train with validation-based selection; the result holds the one test evaluation ("test")."""
    from avel.models.registry import ModelConfig
    from avel.train.trainer import train

    # The trainer's own progress bar stays off: the runner's bar shows the cell and polls its epochs.
    return train(dataset, ModelConfig(**model_kwargs), train_cfg, run_dir, progress=False)


def training_status(run_dir: Path) -> str:
    """'epoch 3 val 61%' from the trainer's resume state (last.json), '' before the first epoch."""
    path = run_dir / "last.json"
    if not path.is_file():
        return ""
    import json

    history = json.loads(path.read_text()).get("history") or []
    if not history:
        return ""
    return f"epoch {history[-1]['epoch']} val {history[-1]['val_accuracy']:.0f}%"


def _run_table3(dataset: Any, out_dir: Path, seed: int, quick: bool, device: str) -> dict:
    from avel.crossmodal import run_table3

    return run_table3(dataset, out_dir, seed=seed, progress=False, quick=quick, device=device)


def _measure_speed(configs: dict[str, dict], settings: dict[str, int]) -> dict:
    """Parameters and fp32 inference segments/s of each model on this CPU (avel.models.speed)."""
    from avel.models.registry import ModelConfig
    from avel.models.speed import measure_configs

    return measure_configs({label: ModelConfig(**kw) for label, kw in configs.items()}, **settings)


def sota_speed(cells: list[C.Cell], opts: Options, backend: Backend) -> dict | None:
    """The sota table's speed measurement over the rows whose cells this invocation trains (None
    without the sota section)."""
    if "sota" not in opts.sections:
        return None
    keys = {c.key for c in cells}
    configs = {label: cell.model_kwargs() for label, cell in C.sota_rows() if cell.key in keys}
    return backend.measure_speed(configs, dict(QUICK_SPEED if opts.quick else SPEED)) if configs else None


def _figures(**kwargs: Any) -> list[dict]:
    from avel.report.draw import draw_figures

    return draw_figures(**kwargs)


# --------------------------------------------------------------------------- dataset


def dataset_info(ds: Any, root: Path) -> dict[str, Any]:
    """What results.json says about the data a reproduction ran on."""
    splits = {s: int(len(ds.split(s))) for s in ("train", "val", "test")}
    synthetic = bool(getattr(ds, "is_synthetic", False))
    return {"name": "AVE-Synth" if synthetic else "AVE", "root": str(root), "synthetic": synthetic,
            "videos": int(len(ds.catalog)), "splits": splits, "categories": list(ds.catalog.categories),
            "audio_maps": getattr(ds, "audio_map", None) is not None, "baselines": test_baselines(ds)}


def test_baselines(ds: Any, split: str = "test") -> dict[str, Any] | None:
    """The rates every accuracy table is read against (avel.train.evaluate.baselines on the test
    split's labels): majority class and its rate, chance rate, and per category (class order) the
    number of test videos and their majority rate. None for a dataset without per-second labels."""
    from avel.train.data import read_rows
    from avel.train.evaluate import baselines, category_names

    if getattr(ds, "labels", None) is None:
        return None
    rows = np.asarray(ds.split(split), dtype=np.int64)
    labels = read_rows(ds.labels, rows)
    names = category_names(ds, labels.shape[-1])
    b = baselines(labels.argmax(-1), read_rows(ds.mil_labels, rows).argmax(-1), names)
    cats = list(ds.catalog.categories)
    return {"split": split, "majority_class": b["majority_class"], "majority_rate": b["majority_rate"],
            "chance_rate": b["chance_rate"], "num_classes": len(names),
            "category_videos": [int(b["per_class_videos"].get(c, 0)) for c in cats],
            "category_majority_rate": [b["per_class_majority_rate"].get(c) for c in cats]}


def data_fingerprint(ds: Any) -> str:
    """A short hash of the labels and splits: cells trained on other data are not reused."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(np.asarray(ds.mil_labels, dtype=np.float32)).tobytes())
    for s in ("train", "val", "test"):
        h.update(np.asarray(ds.split(s), dtype=np.int64).tobytes())
    h.update(b"synth" if getattr(ds, "is_synthetic", False) else b"real")
    marker = getattr(ds, "synth_meta", None)
    if marker:  # other AVE-Synth features under the same labels (another generator version or parameters)
        from avel.data.synth import non_default_params

        identity = {"version": marker.get("version"), "params": non_default_params(marker)}
        if identity != {"version": 1, "params": {}}:  # v1 with default parameters keeps its earlier fingerprint
            h.update(json.dumps(identity, sort_keys=True).encode())
    return h.hexdigest()[:16]


def prepare_data(opts: Options, backend: Backend) -> tuple[Any, Path]:
    """Open --data, or generate AVE-Synth (with audio maps) into out/data, reusing a finished one."""
    if opts.data is not None:
        return backend.open_dataset(opts.data, progress=opts.progress), opts.data
    root = opts.out / DATA_DIR
    from avel.data.catalog import NUM_EVENT_CLASSES
    from avel.data.synth import GENERATOR_VERSION, non_default_params, read_marker

    videos = opts.videos or (QUICK_VIDEOS if opts.quick else _synth_full_size())
    categories = opts.categories or NUM_EVENT_CLASSES
    marker = read_marker(root) if root.is_dir() else None
    want = {"videos": videos, "categories": categories, "audio_maps": True, "seed": SYNTH_SEED,
            "version": GENERATOR_VERSION, "params": {}}
    if marker is not None:
        have = {**{k: marker.get(k, NUM_EVENT_CLASSES if k == "categories" else None) for k in want},
                "params": non_default_params(marker)}
        if have != want:
            raise AvelError(f"holds AVE-Synth {have}, this run needs {want}; use another --out or pass "
                            "--videos/--categories to match", root)
    else:
        backend.generate_synth(root, videos=videos, categories=categories, seed=SYNTH_SEED, progress=opts.progress)
    return backend.open_dataset(root, progress=opts.progress), root


def _synth_full_size() -> int:
    from avel.data.synth import FULL_SIZE

    return FULL_SIZE


# --------------------------------------------------------------------------- jobs


def cell_job(cell: C.Cell, seed: int, ds: Any, data_fp: str, opts: Options, backend: Backend) -> Job:
    """One training + test-evaluation run of a cell."""
    train_cfg = backend.make_train_config(seed=seed, device=opts.device, overrides=cell_overrides(cell, opts))
    model_kwargs = cell.model_kwargs()
    if cell.needs_audio_map:
        model_kwargs["audio_map_shape"] = tuple(int(x) for x in ds.audio_map.shape[2:])
    run_dir = opts.out / RUNS_DIR / cell.slug / f"seed{seed}"
    fp = {"model": model_kwargs, "train": result_fields(train_cfg), "data": data_fp}

    def execute(run_dir: Path) -> dict[str, Any]:
        return run_record(backend.train(ds, model_kwargs, train_cfg, run_dir), list(ds.catalog.categories),
                          run_dir, opts.out)

    # resumes: the trainer continues an interrupted run directory with the same configuration.
    return Job(group=cell.key, seed=seed, label=f"{cell.key} (seed {seed})", run_dir=run_dir,
               fingerprint=fp, execute=execute, resumes=True, status=training_status)


def table3_job(seed: int, ds: Any, data_fp: str, opts: Options, backend: Backend) -> Job:
    """One cross-modal (AVDLN + DCCA) training and evaluation for Table 3."""
    run_dir = opts.out / RUNS_DIR / "table3" / f"seed{seed}"

    def execute(run_dir: Path) -> dict[str, Any]:
        res = backend.run_table3(ds, run_dir, seed=seed, quick=opts.quick, device=opts.device)
        return {k: res[k] for k in ("AVDLN", "DCCA", "chance", "evaluated", "skipped") if k in res}

    return Job(group="table3", seed=seed, label=f"Table 3 AVDLN + DCCA (seed {seed})", run_dir=run_dir,
               fingerprint={"table3": {"quick": opts.quick, "seed": seed}, "data": data_fp}, execute=execute,
               resumes=True)


def n_workers(opts: Options) -> int:
    """Parallel training runs: --workers, else QUICK_WORKERS for --quick (at most the CPU count), else 1."""
    import os

    if opts.workers is not None:
        if opts.workers < 1:
            raise AvelError(f"--workers must be at least 1, got {opts.workers}")
        return opts.workers
    return min(QUICK_WORKERS, os.cpu_count() or 1) if opts.quick else 1


def precision_record(opts: Options) -> dict[str, Any]:
    """The compute precision the runs of this invocation use on its device (avel.precision)."""
    from avel.precision import decide

    return decide(opts.precision, "cuda" if opts.device.startswith("cuda") else "cpu").record()


def train_overrides(opts: Options) -> dict[str, Any]:
    """Training settings that differ from avel.train's defaults: --quick's, then --epochs."""
    out: dict[str, Any] = dict(QUICK_TRAIN) if opts.quick else {}
    if not opts.standardize:
        out["standardize"] = False
    threads = opts.threads if opts.threads is not None else (1 if n_workers(opts) > 1 else None)
    if threads is not None:
        out["num_threads"] = threads  # a runtime field: not part of the fingerprint
    if opts.precision != "auto":
        out["precision"] = opts.precision  # a runtime field too
    if opts.epochs is not None:
        if opts.epochs < 1:
            raise AvelError(f"--epochs must be at least 1, got {opts.epochs}")
        out["epochs"] = opts.epochs
    return out


def cell_overrides(cell: C.Cell, opts: Options) -> dict[str, Any]:
    """train_overrides, with --quick's QUICK_LATER_EPOCHS for the later methods (unless --epochs is given)."""
    out = train_overrides(opts)
    if opts.quick and opts.epochs is None and cell.model in C.LATER_METHODS:
        out["epochs"] = QUICK_LATER_EPOCHS
    return out


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def run_record(trained: dict, categories: list[str], run_dir: Path, out: Path) -> dict[str, Any]:
    """The per-run record kept by the runner, from the trainer's results: test accuracy, per-category
    accuracy (in class order; None for a category without test videos), attention hit rate, and
    the validation score that selected the checkpoint."""
    test, val = trained["test"], trained.get("val") or {}
    per_class = test.get("per_class") or {}
    selection = trained.get("test_at_validation") or {}
    return {
        "accuracy": float(test["accuracy"]),
        "per_class": [_float(per_class.get(name)) for name in categories],
        "val_accuracy": _float(val.get("accuracy")),
        "best_epoch": trained.get("best_epoch"),
        "epochs": trained.get("epochs_run"),
        "train_seconds": trained.get("train_seconds"),
        "attention_hit_rate": _float(test.get("attention_hit_rate")),
        "attention_chance": _float(test.get("attention_chance_rate")),
        "degenerate": degenerate(test),
        "most_predicted_share": _float(test.get("most_predicted_share")),
        "best_test_accuracy": _float(selection.get("best")),
        "test_selection_difference": _float(selection.get("difference")),
        "run_dir": str(run_dir.relative_to(out)),
    }


def degenerate(test: dict[str, Any]) -> bool:
    """The test evaluation's `degenerate` flag, recomputed from its confusion matrix for results
    written before the flag existed."""
    from avel.train.evaluate import degenerate_from_confusion

    if "degenerate" in test:
        return bool(test["degenerate"])
    return degenerate_from_confusion(test["confusion"]) if test.get("confusion") else False


def check_run_data(rec: dict[str, Any], out: Path, ds: Any) -> None:
    """Refuse a reused record whose run was trained on other data than `ds` by content (its
    config.json's fingerprint; the record's own fingerprint covers labels and splits, not features)."""
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.fingerprint import fingerprint_differences, run_fingerprint

    run_dir = out / rec["run_dir"]
    try:
        doc = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return
    trained_on = (doc.get("data") or {}).get("fingerprint")
    if trained_on is None:  # a run from before fingerprints: the record's fingerprint is all there is
        return
    diffs = fingerprint_differences(trained_on, run_fingerprint(ds, ModelConfig.from_dict(doc["model"]),
                                                                TrainConfig.from_dict(doc["train"])))
    if diffs:
        raise AvelError("trained on different data (" + "; ".join(diffs[:4]) + "); delete it (and its "
                        "record) or choose a new --out", run_dir)


def complete_record(rec: dict[str, Any], out: Path, ds: Any = None) -> dict[str, Any]:
    """A record reused from an earlier invocation: checked against the data at hand (with `ds`), and,
    from an earlier avel without the degenerate flag, completed from the run's results."""
    if not rec.get("run_dir"):
        return rec
    if ds is not None:
        check_run_data(rec, out, ds)
    if "degenerate" in rec:
        return rec
    path = out / rec["run_dir"] / "results.json"
    try:
        test = json.loads(path.read_text())["test"]
    except (OSError, ValueError, KeyError):
        return rec
    return {**rec, "degenerate": degenerate(test), "most_predicted_share": test.get("most_predicted_share")}


# --------------------------------------------------------------------------- the whole reproduction


def reproduce(opts: Options, backend: Backend | None = None) -> dict[str, Any]:
    """Run (or resume) the reproduction; write results.json and report.md; return the results."""
    from avel.report.markdown import render_report
    from avel.report.results import build_results

    backend = backend or Backend()
    t0 = time.perf_counter()
    unknown = [s for s in opts.sections if s not in C.SECTIONS]
    if unknown:
        raise AvelError(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(C.SECTIONS)}")
    n_seeds = opts.seeds if opts.seeds is not None else (QUICK_SEEDS if opts.quick else DEFAULT_SEEDS)
    if n_seeds < 1:
        raise AvelError(f"--seeds must be at least 1, got {n_seeds}")
    seeds = list(range(n_seeds))
    select_cells(C.cells_for(opts.sections, audio_maps=True), opts.cells)  # bad --cells: fail before any work
    n_workers(opts)  # bad --workers, --device: fail before generating any data
    if opts.device != "cpu":
        from avel.train.distributed import resolve_device

        resolve_device(opts.device)
    opts.out.mkdir(parents=True, exist_ok=True)
    ds, root = prepare_data(opts, backend)
    info = dataset_info(ds, root)
    fp = data_fingerprint(ds)
    cells = [c for c in select_cells(C.cells_for(opts.sections, audio_maps=True), opts.cells)
             if info["audio_maps"] or not c.needs_audio_map]  # A' models: "not available" without audio maps

    per_cell = cell_seeds(cells, seeds, opts)
    jobs = [cell_job(c, s, ds, fp, opts, backend) for c in cells for s in per_cell[c.key]]
    if "table3" in opts.sections:
        jobs += [table3_job(s, ds, fp, opts, backend) for s in seeds]
    stats = run_jobs(jobs, progress=opts.progress, workers=n_workers(opts))

    for c in cells:  # records reused from an earlier avel: add what they lack
        stats.records[c.key] = [complete_record(r, opts.out, ds) for r in stats.records.get(c.key, [])]
    summaries_for_figs = {c.key: stats.records.get(c.key, []) for c in cells}
    figures = backend.figures(out=opts.out, dataset=ds, cells=cells, records=summaries_for_figs)
    train_settings = next(({k: v for k, v in j.fingerprint["train"].items() if k != "seed"}
                           for j in jobs if "train" in j.fingerprint), {})
    results = build_results(
        dataset=info,
        settings={"seeds": seeds, "one_seed_cells": sorted(k for k, v in per_cell.items() if len(v) < len(seeds)),
                  "quick": opts.quick, "sections": list(opts.sections), "train": train_settings,
                  "selection": "validation", "device": opts.device,
                  **({"later_methods_epochs": QUICK_LATER_EPOCHS}
                     if opts.quick and opts.epochs is None and any(c.model in C.LATER_METHODS for c in cells) else {}),
                  "precision": precision_record(opts)},
        sections=opts.sections, cells=cells, cell_runs=stats.records,
        table3_runs=stats.records.get("table3"), figures=figures, speed=sota_speed(cells, opts, backend),
        timing={"wall_seconds": time.perf_counter() - t0, "runs_trained": stats.trained,
                "runs_reused": stats.reused, "train_seconds": stats.seconds},
    )
    write_json(opts.out / RESULTS_FILE, results)
    write_text(opts.out / REPORT_FILE, render_report(results))
    return results


def cell_seeds(cells: list[C.Cell], seeds: list[int], opts: Options) -> dict[str, list[int]]:
    """The seeds each cell trains: all of `seeds`, except under --quick without --seeds, where cells
    outside QUICK_SPREAD_SECTIONS train seeds[:1]."""
    if not opts.quick or opts.seeds is not None:
        return {c.key: seeds for c in cells}
    spread = {c.key for s in opts.sections if s in QUICK_SPREAD_SECTIONS for c in C.section_cells(s)}
    return {c.key: seeds if c.key in spread else seeds[:1] for c in cells}


def select_cells(cells: list[C.Cell], keys: Sequence[str] | None) -> list[C.Cell]:
    """The cells named by --cells (all when None); unknown names are an error listing the valid ones."""
    if keys is None:
        return cells
    valid = {c.key: c for c in cells}
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise AvelError(f"--cells: unknown cell(s) {', '.join(map(repr, unknown))} for the chosen sections; "
                        f"valid: {', '.join(valid)}")
    return [c for c in cells if c.key in set(keys)]


def parse_sections(text: str | None) -> tuple[str, ...]:
    """`--only table1,table2` (or `--tables`) -> the sections in report order."""
    if not text:
        return C.SECTIONS
    want = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in want if s not in C.SECTIONS]
    if unknown:
        raise AvelError(f"--only/--tables: unknown section(s) {', '.join(unknown)}; valid: {', '.join(C.SECTIONS)}")
    return tuple(s for s in C.SECTIONS if s in want)
