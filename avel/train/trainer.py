"""Train a localizer on a dataset: Adam, validation-selected checkpoint, early stopping, resumable.

`train(dataset, model_cfg, train_cfg, out_dir)` writes a run directory (see avel.train.checkpoint)
and returns the final results (also in results.json). Calling it again on the same directory with
the same configuration resumes an interrupted run, or returns the results of a finished one; a
directory holding a different run is refused. Under torchrun it trains with
DistributedDataParallel (avel.train.distributed); rank 0 writes the files.

Supervised models learn from per-second labels; weak ones (cfg.weak) from video labels only, through
MIL average pooling (eq. 7), with the background-only videos (ds.noisy) added when present. Both are
scored per second on the segment labels. The loss is TrainConfig.loss on the logits or, for a model
that defines `method_loss(out, target, weak)` (CMRAN, PSP, CMBS: their own objectives), that method
(avel.train.losses.batch_loss), in training and validation alike. The checkpoint is selected on the
validation split: per-second accuracy for supervised models, video-level accuracy for weak ones
(segment labels are not theirs to see), ties broken by the lower validation loss. Training stops
when for `patience` epochs neither that score nor the validation loss has improved (accuracy alone
plateaus in the first epochs while the loss still falls), but never before `min_steps` optimizer
steps (a small dataset's first epochs are a few steps on the majority-class plateau). The test split
is evaluated once. A recipe (avel.train.recipes) may change the loop: a per-step or per-epoch learning-rate
schedule, gradient-norm clipping, validation every k epochs from a start epoch, another selection rule
or split. With `standardize` (the default) the inputs are standardized per channel with
statistics of the training split that are saved in the checkpoint (avel.train.standardize).
"""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import avel
from avel.errors import AvelError
from avel.io import LOCK_FILE, atomic_path, output_lock, write_json, write_text
from avel.models.localizers import normalize_config, paper_name
from avel.models.registry import ModelConfig, create_model, model_spec
from avel.progress import stderr_progress
from avel.train import checkpoint as ckpt
from avel.train.config import TrainConfig
from avel.train.data import ConcatSource, Source
from avel.train.distributed import DistInfo, all_reduce_sum, any_rank, barrier, init_from_env, resolve_device
from avel.train.evaluate import evaluate_model
from avel.train.fingerprint import dataset_summary, fingerprint_differences, run_fingerprint
from avel.train.losses import LOSSES, batch_loss, has_method_loss
from avel.train.perf import tune_cpu_allocator
from avel.train import recipes
from avel.precision import Decision, autocast, decide, grad_scaler, keep_recurrent_fp32

GIB = 1024**3
CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_video_accuracy", "test_accuracy",
                 "test_seconds", "seconds")
# test_accuracy: per-second test accuracy at each validation point, recorded so that reports can show
# what selecting on the test split would have reported. It is never read by checkpoint selection,
# early stopping or anything else that decides how training proceeds.


# ---------------------------------------------------------------- run directory

def describe_data(ds: Any, train_cfg: TrainConfig, model_cfg: ModelConfig | None = None) -> dict[str, Any]:
    """What the run was trained on: the directory (for `avel evaluate`), sizes and, with `model_cfg`,
    a content fingerprint (avel.train.fingerprint) of everything training reads."""
    root = getattr(ds, "root", None)
    split_names = (train_cfg.train_split, train_cfg.val_split, train_cfg.test_split)
    splits = {s: int(len(ds.split(s))) for s in split_names}
    noisy = getattr(ds, "noisy", None)
    doc = {
        "root": str(Path(root).resolve()) if root is not None else None,
        "synthetic": bool(getattr(ds, "is_synthetic", False)),
        "rows": int(len(ds.labels)),
        "splits": splits,
        "noisy": int(len(noisy.audio)) if noisy is not None else 0,
        "categories": list(ds.catalog.categories),  # output c means categories[c] (avel.data.classes)
    }
    if model_cfg is not None:
        doc["fingerprint"] = run_fingerprint(ds, model_cfg, train_cfg)
    return doc


# data fields that are not compared one by one (the categories follow the annotations, which the
# fingerprint covers; runs written before avel recorded them have none)
NOT_DATA_FIELDS = ("root", "fingerprint", "categories")


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str) -> list[str]:
    return [f"{prefix}{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _is_empty(out: Path) -> bool:
    """No entries but output_lock's lock file."""
    return not any(p.name != LOCK_FILE for p in out.iterdir())


def prepare_run_dir(out: Path, doc: dict[str, Any]) -> str:
    """'new', 'resume' or 'done'; refuse a directory that holds something else.

    A run trained on other data (its recorded content fingerprint differs) is refused first, naming
    what differs. A run written before avel recorded fingerprints cannot be checked and is refused
    too (`avel evaluate` still reads it)."""
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise AvelError("exists and is not a directory", out)
    if not (out / ckpt.CONFIG_FILE).is_file():
        if not _is_empty(out):
            raise AvelError("exists, is not empty and holds no avel run: choose a new or empty --out", out)
        return "new"
    old = ckpt.read_run_config(out)
    old_fp, new_fp = old.get("data", {}).get("fingerprint"), doc["data"].get("fingerprint")
    if old_fp is None:
        raise AvelError("was written before avel recorded the content of a run's training data, so what it "
                        "was trained on cannot be checked: choose a new --out (`avel evaluate` still reads it)",
                        out)
    diffs = (_differences(old.get("model", {}), doc["model"], "model.")
             + _differences(TrainConfig.from_dict(old["train"]).result_fields(),
                            TrainConfig.from_dict(doc["train"]).result_fields(), "train."))
    if diffs:
        raise AvelError("holds a different run (" + "; ".join(diffs[:4]) + "): choose another --out "
                        "or delete it", out)
    fp_diffs = fingerprint_differences(old_fp, new_fp or {})  # same configuration: then the data must match
    fp_diffs += _differences({k: v for k, v in old.get("data", {}).items() if k not in NOT_DATA_FIELDS},
                             {k: v for k, v in doc["data"].items() if k not in NOT_DATA_FIELDS}, "data.")
    if fp_diffs:
        raise AvelError("trained on different data (" + "; ".join(fp_diffs[:4]) + "); choose a new --out", out)
    return "done" if (out / ckpt.RESULTS_FILE).is_file() else "resume"


def write_curves(out: Path, history: list[dict[str, Any]], best_epoch: int | None, title: str,
                 plot: bool = True) -> None:
    """curves.csv and (with `plot`) curves.png: loss and validation accuracy per epoch."""
    lines = [",".join(CURVE_COLUMNS)]
    lines += [",".join(f"{h[c]:.6g}" if isinstance(h.get(c), float) else "" if h.get(c) is None else str(h[c])
                       for c in CURVE_COLUMNS) for h in history]
    write_text(out / ckpt.CURVES_CSV, "\n".join(lines) + "\n")
    if not history or not plot:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(8, 3.2))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_accuracy"] for h in history], label="per-second")
    ax2.plot(epochs, [h["val_video_accuracy"] for h in history], label="video (MIL)", linestyle="--")
    if all(h.get("test_accuracy") is not None for h in history):
        ax2.plot(epochs, [h["test_accuracy"] for h in history], label="test (never used to select)",
                 linestyle=":", color="grey")
    if best_epoch is not None:
        ax2.axvline(best_epoch, color="grey", linewidth=0.8, label=f"selected ({best_epoch})")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out / ckpt.CURVES_PNG) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# ---------------------------------------------------------------- data

def _noisy_source(ds: Any, inputs: tuple[str, ...], cache_bytes: float) -> Source | None:
    """The background-only videos as a weak training source (video labels), if the dataset has them."""
    noisy = getattr(ds, "noisy", None)
    if noisy is None or not all(getattr(noisy, k, None) is not None for k in inputs):
        return None
    labels = np.asarray(noisy.labels, dtype=np.float32)
    if labels.ndim == 3:  # per-second labels: the video label is the class present in any second
        labels = labels.max(axis=1)
    arrays = {k: getattr(noisy, k) for k in inputs}
    arrays["mil_labels"] = labels
    return Source(arrays, np.arange(len(labels)), cache_bytes)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ---------------------------------------------------------------- training

@dataclasses.dataclass
class _State:
    epoch: int = 0  # epochs finished
    best_key: tuple[float, float] | None = None  # (selection accuracy, -val loss) of the checkpoint
    best_epoch: int | None = None
    best_val_loss: float | None = None  # lowest validation loss so far (early stopping watches it too)
    bad_epochs: int = 0  # epochs in which neither the selection score nor the validation loss improved
    steps: int = 0  # optimizer steps taken (early stopping waits for TrainConfig.min_steps of them)
    stopped: str | None = None  # why training ended ("early stopping", "max epochs")
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0


class _Trainer:
    def __init__(self, ds: Any, model_cfg: ModelConfig, cfg: TrainConfig, out: Path, *, progress: bool,
                 device: torch.device, info: DistInfo) -> None:
        self.ds, self.model_cfg, self.cfg, self.out = ds, model_cfg, cfg, out
        # bf16/fp16 autocast or fp32; the choice is said unless quiet, a slow explicit bf16 always warned about
        self.precision = decide(cfg.precision, device, announce=progress and info.is_main, warn=info.is_main)
        self.scaler = grad_scaler(self.precision)  # fp16 loss scaling on CUDA; a pass-through otherwise
        self.device, self.info = device, info
        self.progress = progress and info.is_main
        self.weak = model_cfg.weak
        self.inputs = model_spec(model_cfg.name).inputs
        self.target_key = "mil_labels" if self.weak else "labels"
        self.loss_fn = LOSSES[cfg.loss]
        cache = cfg.cache_gb * GIB
        train_rows = np.asarray(ds.split(cfg.train_split), dtype=np.int64)
        val_rows = np.asarray(ds.split(cfg.val_split), dtype=np.int64)
        if len(train_rows) == 0 or len(val_rows) == 0:
            raise AvelError(f"the {cfg.train_split} and {cfg.val_split} splits must not be empty",
                            getattr(ds, "root", None))
        arrays = {k: getattr(ds, k) for k in (*self.inputs, self.target_key)}
        sources = [Source(arrays, train_rows, cache)]
        noisy = _noisy_source(ds, self.inputs, cache) if (self.weak and cfg.use_noisy) else None
        self.noisy_videos = len(noisy) if noisy is not None else 0
        self.train_src = ConcatSource(sources + ([noisy] if noisy is not None else []))
        if cfg.drop_last and len(self.train_src) < cfg.batch_size:  # every epoch would take no step
            raise AvelError(f"training has {len(self.train_src)} videos, fewer than one batch of {cfg.batch_size}, "
                            f"and drop_last (the recipe's) skips the incomplete batch: lower --batch-size",
                            getattr(ds, "root", None))
        val_arrays = {k: getattr(ds, k) for k in (*self.inputs, "labels", "mil_labels")}
        self.val_src = Source(val_arrays, val_rows[info.rank::info.world], cache)
        # The test split, scored at each validation point for reporting only (see _test_point).
        test_rows = np.asarray(ds.split(cfg.test_split), dtype=np.int64)
        self.test_src = Source({k: getattr(ds, k) for k in (*self.inputs, "labels")},
                               test_rows[info.rank::info.world], cache) if len(test_rows) else None

    def _input_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-channel mean and std of the model's inputs over the training split's rows."""
        from avel.train import standardize

        rows = np.asarray(self.ds.split(self.cfg.train_split), dtype=np.int64)
        return standardize.fit({k: getattr(self.ds, k) for k in self.inputs}, rows)

    # one epoch --------------------------------------------------------------
    def _batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's share of each global batch of the epoch (the same shuffle on every rank)."""
        world = self.info.world
        steps = recipes.epoch_batches(len(self.train_src), self.cfg, epoch)  # shuffled, or in split order
        return [rows[self.info.rank::world] for rows in steps if len(rows) >= world]

    def _train_epoch(self, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, bar: Any) -> float:
        model.train()
        total, n = 0.0, 0
        batches = self._batches(epoch)
        for step, positions in enumerate(batches):
            # StepLR per batch (lr_step > 0) or the per-epoch multi-step schedule (lr_milestones)
            recipes.set_step_lr(opt, self.cfg, epoch * len(batches) + step + 1, epoch)
            batch = _to(self.train_src.take(positions), self.device)
            target = batch.pop(self.target_key)
            with autocast(self.precision):  # products in bf16/fp16; weights and optimizer state stay fp32
                out = model(**batch)
            loss = batch_loss(ckpt.unwrap(model), out, target, self.weak, self.loss_fn)  # method_loss or cfg.loss
            if any_rank(not bool(torch.isfinite(loss)), self.info, self.device):
                self._nan_stop(epoch, step, loss.item())
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.clip_grad_norm is not None:
                self.scaler.unscale_(opt)  # clip the true gradients (a no-op without fp16 loss scaling)
                recipes.clip_gradients(model, self.cfg)
            self.scaler.step(opt)
            self.scaler.update()
            total += loss.item()
            n += 1
            if bar is not None:
                bar.advance(f"loss {total / n:.4f}")
        s, c = all_reduce_sum([total, float(n)], self.info, self.device)
        return s / max(c, 1.0)

    @torch.no_grad()
    def _validate(self, model: nn.Module) -> dict[str, float]:
        model = ckpt.unwrap(model).eval()
        sums = np.zeros(6)  # seg correct, seg total, video correct, videos, loss sum, loss batches
        bs = self.cfg.batch_size
        for i in range(0, len(self.val_src), bs):
            batch = _to(self.val_src.take(np.arange(i, min(i + bs, len(self.val_src)))), self.device)
            labels, mil = batch.pop("labels"), batch.pop("mil_labels")
            with autocast(self.precision):
                out = model(**batch)
            logits = out.logits.float()  # (b, T, C)
            seg = (logits.argmax(-1) == labels.argmax(-1)).sum().item()
            vid = (logits.mean(1).argmax(-1) == mil.argmax(-1)).sum().item()
            loss = batch_loss(model, out, mil if self.weak else labels, self.weak, self.loss_fn).item()
            sums += [seg, labels.shape[0] * labels.shape[1], vid, labels.shape[0], loss * labels.shape[0],
                     labels.shape[0]]
        s = all_reduce_sum(sums.tolist(), self.info, self.device)
        return {"val_accuracy": 100.0 * s[0] / s[1], "val_video_accuracy": 100.0 * s[2] / s[3],
                "val_loss": s[4] / s[5]}

    @torch.inference_mode()
    def _test_point(self, model: nn.Module) -> dict[str, float | None]:
        """Per-second test accuracy of the current weights, for the curves and the report's
        "price of test-split selection" only. Nothing that decides how training proceeds (checkpoint
        selection, early stopping) may read it: _end_epoch keys both on validation values alone.
        Cheap: one forward pass over the test split, held in memory like the validation split."""
        if self.test_src is None:
            return {"test_accuracy": None, "test_seconds": 0.0}
        t0 = time.perf_counter()
        model = ckpt.unwrap(model).eval()
        correct, total = 0.0, 0.0
        bs = max(self.cfg.batch_size, 64)
        for i in range(0, len(self.test_src), bs):
            batch = _to(self.test_src.take(np.arange(i, min(i + bs, len(self.test_src)))), self.device)
            labels = batch.pop("labels")
            with autocast(self.precision):  # as validation and the final evaluation compute
                logits = model(**batch).logits.float()  # (b, T, C)
            correct += (logits.argmax(-1) == labels.argmax(-1)).sum().item()
            total += labels.shape[0] * labels.shape[1]
        c, n = all_reduce_sum([correct, total], self.info, self.device)
        return {"test_accuracy": 100.0 * c / max(n, 1.0), "test_seconds": time.perf_counter() - t0}

    def _nan_stop(self, epoch: int, step: int, value: float) -> None:
        kept = (f"the last good checkpoint (epoch {self.state.best_epoch}) is kept in {self.out}"
                if self.state.best_epoch is not None else "no epoch had finished, so no checkpoint exists")
        if self.info.is_main and self.state.history:
            write_curves(self.out, self.state.history, self.state.best_epoch, paper_name(self.model_cfg))
        raise AvelError(f"training loss became {value} at epoch {epoch + 1}, step {step + 1}; stopped "
                        f"({kept}). If the features may hold NaN/Inf, run `avel data check`; otherwise "
                        f"retry with a lower --lr into a new --out", self.out)

    # the run ----------------------------------------------------------------
    def run(self, resume: bool) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)
        model = create_model(self.model_cfg)
        if cfg.standardize:  # per-channel statistics of the training split, saved with the weights
            from avel.train import standardize

            standardize.attach(model, self._input_stats())
        model = model.to(self.device)
        if cfg.init_from:  # fine-tune: attention + LSTMs from another run (a resumed run then loads its own state)
            from avel.train.init_from import init_from_run

            init_from_run(ckpt.unwrap(model), self.model_cfg, cfg, cfg.init_from)
        keep_recurrent_fp32(model, self.precision)  # CPU: LSTMs in fp32 inside autocast (avel.precision)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.state = _State()
        saved = ckpt.load_resume_state(self.out, model, opt) if resume else None
        if saved is not None:
            self.state = _State(**{f.name: saved[f.name] for f in dataclasses.fields(_State) if f.name in saved})
            if self.state.best_key is not None:
                self.state.best_key = tuple(self.state.best_key)
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        title = paper_name(self.model_cfg)
        with _Bar(self.progress, title, len(self._batches(0)), cfg.epochs) as bar:
            while self.state.stopped is None:
                epoch = self.state.epoch
                if epoch >= cfg.epochs:
                    self.state.stopped = "max epochs"
                    break
                bar.start_epoch(epoch, self.state)
                t0 = time.perf_counter()
                train_loss = self._train_epoch(model, opt, epoch, bar)
                self.state.steps += len(self._batches(epoch))
                # val_every > 1 (the authors' recipe: every 5th epoch), val_start > 0 (PSP: not epoch 0)
                if not recipes.validates(cfg, epoch, has_checkpoint=self.state.best_epoch is not None):
                    self._skip_validation(model, opt, epoch, time.perf_counter() - t0)
                    bar.end_epoch(self.state)
                    continue
                val = self._validate(model)
                val.update(self._test_point(model))  # recorded only; _end_epoch decides on validation values
                seconds = time.perf_counter() - t0
                self._end_epoch(model, opt, epoch, train_loss, val, seconds)
                bar.end_epoch(self.state)
        if info.is_main:
            write_curves(self.out, self.state.history, self.state.best_epoch, title)
        barrier(info)
        return self._finish()

    def _skip_validation(self, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, seconds: float) -> None:
        """End an epoch without validation (val_every > 1): no checkpoint selection, no early-stopping
        count, no history row (the curves hold validated epochs only); the resume state is saved."""
        st = self.state
        st.epoch = epoch + 1
        st.train_seconds += seconds
        if st.epoch >= self.cfg.epochs:
            st.stopped = "max epochs"
        if self.info.is_main:
            ckpt.save_resume_state(self.out, model, opt, dataclasses.asdict(st))
        barrier(self.info)

    def _end_epoch(self, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, train_loss: float,
                   val: dict[str, float], seconds: float) -> None:
        st, cfg = self.state, self.cfg
        st.history.append({"epoch": epoch + 1, "train_loss": train_loss, **val, "seconds": seconds})
        key = recipes.selection_key(cfg, self.weak, val, epoch)  # TrainConfig.selection
        st.epoch = epoch + 1
        st.train_seconds += seconds
        loss_improved = st.best_val_loss is None or val["val_loss"] < st.best_val_loss
        if loss_improved:
            st.best_val_loss = val["val_loss"]
        st.bad_epochs = 0 if loss_improved else st.bad_epochs + 1
        if st.best_key is None or key > st.best_key:
            st.best_key, st.best_epoch, st.bad_epochs = key, epoch + 1, 0
            if self.info.is_main:
                ckpt.save_model(self.out, model, self.model_cfg,
                                {"epoch": epoch + 1, "val_accuracy": val["val_accuracy"],
                                 "val_video_accuracy": val["val_video_accuracy"], "val_loss": val["val_loss"]})
        if st.bad_epochs >= cfg.patience and st.steps >= cfg.min_steps:
            st.stopped = "early stopping"
        elif st.epoch >= cfg.epochs:
            st.stopped = "max epochs"
        if self.info.is_main:
            ckpt.save_resume_state(self.out, model, opt, dataclasses.asdict(st))
            write_curves(self.out, st.history, st.best_epoch, paper_name(self.model_cfg), plot=False)
        barrier(self.info)

    def _finish(self) -> dict[str, Any]:
        """Evaluate the selected checkpoint on validation and test (rank 0), write results.json."""
        if self.info.is_main:
            model, model_cfg, _ = ckpt.load_run(self.out, device=self.device)
            results = {
                "model": paper_name(model_cfg), "name": model_cfg.name, "weak": model_cfg.weak,
                "run_dir": str(self.out), "avel_version": avel.__version__,
                "best_epoch": self.state.best_epoch, "epochs_run": self.state.epoch, "stopped": self.state.stopped,
                "train_seconds": round(self.state.train_seconds, 3), "world_size": self.info.world,
                "noisy_videos": self.noisy_videos, "precision": self.precision.record(),
                "val": evaluate_model(model, model_cfg, self.ds, self.cfg.val_split, device=self.device,
                                      precision=self.precision),
                "test": evaluate_model(model, model_cfg, self.ds, self.cfg.test_split, device=self.device,
                                       precision=self.precision),
                "dataset": dataset_summary(self.ds),
            }
            results["test_at_validation"] = test_selection(self.state.history, self.state.best_epoch,
                                                           results["test"]["accuracy"])
            write_json(self.out / ckpt.RESULTS_FILE, results)
        barrier(self.info)
        return ckpt.read_json(self.out / ckpt.RESULTS_FILE)


def test_selection(history: list[dict[str, Any]], best_epoch: int | None, selected: float) -> dict[str, Any]:
    """Test accuracy at every validation point beside the validation-selected one: `best` is what
    selecting the checkpoint on the test split would have reported (the authors' code and most later
    repositories do that), `difference` = best - selected >= 0 is the optimism that selection buys."""
    points = [(h["epoch"], h.get("test_accuracy")) for h in history if h.get("test_accuracy") is not None]
    if not points:
        return {"epochs": [], "accuracy": [], "selected_epoch": best_epoch, "selected": selected, "best": None,
                "best_epoch": None, "difference": None}
    best_epoch_t, best = max(points, key=lambda p: (p[1], -p[0]))
    at_selected = next((a for e, a in points if e == best_epoch), None)
    return {"epochs": [e for e, _ in points], "accuracy": [round(a, 3) for _, a in points],
            "selected_epoch": best_epoch, "selected": selected,
            "selected_during_training": None if at_selected is None else round(at_selected, 3),
            "best": round(best, 3), "best_epoch": best_epoch_t,
            "difference": round(best - (selected if at_selected is None else at_selected), 3),
            "note": "recorded for reporting only; never used for checkpoint selection or early stopping"}



def precision_history(out: Path, decision: Decision) -> list[dict[str, Any]]:
    """config.json's `precision`: one record per start of the run in another precision or on another
    machine (resuming in another precision is allowed: it is a runtime setting, recorded here)."""
    path = out / ckpt.CONFIG_FILE
    old = ckpt.read_json(path).get("precision", []) if path.is_file() else []
    new = decision.record()
    same = old and all(old[-1].get(k) == new[k] for k in ("compute", "device", "machine"))
    return old if same else [*old, new]


class _Bar:
    """Rich progress: a bar for the epoch (loss, validation accuracy, ETA of the epoch) under one for the
    whole run (ETA if it runs to the epoch cap; early stopping ends it sooner); silent when disabled."""

    def __init__(self, enabled: bool, title: str, steps: int, epochs: int) -> None:
        self.enabled, self.title, self.steps, self.epochs = enabled, title, steps, epochs
        self.progress = None
        self.task = None
        self.run_task = None
        self.val = ""

    def __enter__(self) -> "_Bar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = stderr_progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                            TimeRemainingColumn())
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, st: _State) -> None:
        if self.progress is None:
            return
        if self.run_task is None:
            self.run_task = self.progress.add_task(f"{self.title} run (at most {self.epochs} epochs)",
                                                   total=self.steps * self.epochs, completed=self.steps * epoch,
                                                   info="")
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"{self.title} epoch {epoch + 1}/{self.epochs}", total=self.steps,
                                           info=self.val)

    def advance(self, loss: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, info=f"{loss}{self.val}")
            self.progress.update(self.run_task, advance=1)

    def end_epoch(self, st: _State) -> None:
        if self.progress is None:
            return
        if st.history:  # none yet when the first epochs are not validated (val_start > 0)
            h = st.history[-1]
            self.val = f" | val {h['val_accuracy']:.1f}% (best epoch {st.best_epoch})"
            self.progress.update(self.task, info=f"loss {h['train_loss']:.4f}{self.val}")
        if st.stopped:
            self.progress.console.print(f"{self.title}: {st.stopped} after epoch {st.epoch}; "
                                        f"selected epoch {st.best_epoch}")


def _lock_run_dir(stack: ExitStack, out: Path, info: DistInfo, device: torch.device) -> None:
    """Hold avel.io.output_lock on the run directory for the whole of train() (rank 0 holds it for
    every rank): a second process writing the same --out fails at once instead of both "succeeding"."""
    error = None
    if info.is_main:
        try:
            stack.enter_context(output_lock(out))
        except AvelError as exc:
            error = exc
    if any_rank(error is not None, info, device):
        raise error or AvelError("rank 0 could not lock the run directory (another avel process is writing "
                                 "here)", out)


def train(dataset: Any, model_cfg: ModelConfig, train_cfg: TrainConfig, out_dir: str | Path, *,
          progress: bool = True) -> dict[str, Any]:
    """Train, select on validation, evaluate on test; write the run directory; return results.json's content."""
    train_cfg.validate()
    model_cfg = normalize_config(model_cfg)
    model_spec(model_cfg.name)  # unknown model: AvelError listing the valid ones
    probe = create_model(model_cfg)  # a config the model refuses fails here, before anything is written
    if has_method_loss(probe) and train_cfg.loss != TrainConfig().loss:
        raise AvelError(f"{model_cfg.name} trains with its own loss (its method_loss); loss "
                        f"'{train_cfg.loss}' (--loss, or the recipe's) does not apply to it")
    if train_cfg.init_from:  # so does an --init-from run of another architecture, shape or input scaling
        from avel.train.init_from import init_from_run

        init_from_run(probe, model_cfg, train_cfg, train_cfg.init_from)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(train_cfg.device, local_rank)
    if device.type == "cpu" and train_cfg.tune_allocator:
        tune_cpu_allocator()
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = init_from_env(device)
    try:
        out = Path(out_dir)
        doc = {"format": ckpt.RUN_FORMAT, "avel_version": avel.__version__, "model": model_cfg.to_dict(),
               "train": train_cfg.to_dict(), "data": describe_data(dataset, train_cfg, model_cfg),
               "world_size": info.world}
        prepare_run_dir(out, doc)  # refuse a foreign directory or other data before locking (writing) anything
        with ExitStack() as lock:
            _lock_run_dir(lock, out, info, device)
            status = prepare_run_dir(out, doc)  # again, under the lock: another writer may have finished
            barrier(info)
            if status == "done":
                return ckpt.read_json(out / ckpt.RESULTS_FILE)
            trainer = _Trainer(dataset, model_cfg, train_cfg, out, progress=progress, device=device, info=info)
            if info.is_main:
                out.mkdir(parents=True, exist_ok=True)
                write_json(out / ckpt.CONFIG_FILE, {**doc, "precision": precision_history(out, trainer.precision)})
            barrier(info)
            return trainer.run(resume=status == "resume")
    finally:
        if info.enabled and owns_group:
            torch.distributed.destroy_process_group()

