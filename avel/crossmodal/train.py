"""Train AVDLN (contrastive loss on matched/mismatched 1-s pairs) or DCCA (canonical correlation).

Model selection: after every epoch the network localizes the validation match split (A2V and V2A,
exact start); the epoch with the best mean of the two is kept (earliest on ties). The test split is
never looked at. A run resumes from its last finished epoch (state.safetensors) and gives the same
weights as an uninterrupted run: pair sampling and batch order are seeded per epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avel.crossmodal.checkpoint import (CONFIG, METRICS, STATE, load_tensors, read_config, read_json, save_model,
                                        save_tensors, write_config)
from avel.crossmodal.data import CrossModalData, check_dims
from avel.crossmodal.evaluate import evaluate_model
from avel.crossmodal.losses import CONTRASTIVE_MARGIN, cca_loss, contrastive_loss
from avel.crossmodal.models import DCCA, CrossModalConfig, CrossModalNet, build_model
from avel.crossmodal.pairs import positive_pairs, sample_pairs
from avel.errors import AvelError
from avel.io import write_json
from avel.progress import stderr_progress

# Intra-op threads while training on CPU. The networks are tiny (two 2-layer MLPs, small batches):
# extra threads only add synchronisation (measured 4.8 ms/step with 1 thread vs 120 ms with 2 on
# a loaded 2-core machine, batch 64), and a fixed count keeps float summation order, hence results,
# repeatable.
CPU_TRAIN_THREADS = 1


@dataclass
class CrossModalTrainConfig:
    """How a cross-modal network is trained; stored in config.json (a resumed run must match it)."""

    epochs: int = 20  # passes over the training pairs (authors: 20)
    batch_size: int = 8  # AVDLN: pairs per Adam step (authors: 8; small data needs the many steps, see docs)
    dcca_batch_size: int = 256  # DCCA: synchronized pairs per step (covariance estimates need several x embed_dim)
    lr: float = 1e-3  # Adam learning rate (Keras' default, as the authors)
    weight_decay: float = 0.0  # Adam L2 penalty
    margin: float = CONTRASTIVE_MARGIN  # contrastive margin th of eq. 10 (supplement: 2.0)
    shifted_per_positive: int = 1  # AVDLN: same-video time-shifted negatives drawn per synchronized event pair
    shift_into_background: bool = True  # AVDLN: shifted negatives move to a background second (else any other)
    background_negatives: bool = True  # AVDLN: synchronized background seconds as negatives (authors' labels)
    seed: int = 0  # seeds weight init, pair sampling and batch order

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
                  "dcca_batch_size": self.dcca_batch_size >= 2, "lr": self.lr > 0, "margin": self.margin > 0,
                  "shifted_per_positive": self.shifted_per_positive >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise AvelError(f"invalid training settings: {', '.join(f'{k}={getattr(self, k)}' for k in bad)}")


# ---- one epoch per method -------------------------------------------------------------------------

Step = Callable[[float], None]  # progress callback: fraction of the epoch just done


def _gather(feats: torch.Tensor, video: np.ndarray, second: np.ndarray) -> torch.Tensor:
    return feats[torch.from_numpy(video).to(feats.device), torch.from_numpy(second).to(feats.device)]  # (B, dim)


def _avdln_epoch(model: CrossModalNet, opt: torch.optim.Optimizer, feats: dict[str, Any], cfg: CrossModalTrainConfig,
                 rng: np.random.Generator, step: Step) -> float:
    pairs = sample_pairs(feats["mask"], rng, cfg.shifted_per_positive, cfg.background_negatives,
                         cfg.shift_into_background)
    if len(pairs) == 0:
        raise AvelError("no training pairs: the training split has no event seconds")
    batches = range(0, len(pairs), cfg.batch_size)
    total = 0.0
    for lo in batches:
        b = pairs.take(np.arange(lo, min(lo + cfg.batch_size, len(pairs))))
        audio = _gather(feats["audio"], b.video, b.audio_t)  # (B, 128)
        visual = _gather(feats["visual"], b.video, b.visual_t)  # (B, 512)
        same = torch.from_numpy(b.same).to(audio.device)  # (B,)
        loss = contrastive_loss(model(audio, visual), same, cfg.margin)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(b)
        step(1.0 / len(batches))
    return total / len(pairs)


def _dcca_epoch(model: CrossModalNet, opt: torch.optim.Optimizer, feats: dict[str, Any], cfg: CrossModalTrainConfig,
                rng: np.random.Generator, step: Step) -> float:
    pos = feats["positives"]
    if len(pos) < 2:
        raise AvelError("DCCA needs at least 2 synchronized event seconds in the training split")
    order = rng.permutation(len(pos))
    chunks = np.array_split(order, max(1, len(pos) // cfg.dcca_batch_size))  # near-equal, none tiny
    total = 0.0
    for idx in chunks:
        b = pos.take(idx)
        ha = model.audio(_gather(feats["audio"], b.video, b.audio_t))  # (B, embed_dim)
        hv = model.visual(_gather(feats["visual"], b.video, b.visual_t))  # (B, embed_dim)
        loss = cca_loss(ha, hv, model.cfg.cca_dim, model.cfg.cca_reg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        step(1.0 / len(chunks))
    return total / len(pos)


def _dcca_finish(model: CrossModalNet, feats: dict[str, Any]) -> None:
    """Fit DCCA's linear CCA on all synchronized training pairs (the shared space used to localize)."""
    pos = feats["positives"]
    assert isinstance(model, DCCA)
    audio = _gather(feats["audio"], pos.video, pos.audio_t)  # (P, 128)
    visual = _gather(feats["visual"], pos.video, pos.visual_t)  # (P, 512)
    model.fit_projection(audio, visual)


EPOCHS: dict[str, Callable[..., float]] = {"avdln": _avdln_epoch, "dcca": _dcca_epoch}
AFTER_EPOCH: dict[str, Callable[[CrossModalNet, dict[str, Any]], None]] = {"dcca": _dcca_finish}


# ---- resumable state ------------------------------------------------------------------------------

def _pack_state(model: CrossModalNet, opt: torch.optim.Optimizer, best: dict[str, torch.Tensor] | None,
                progress: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in (best or {}).items()})
    opt_state = opt.state_dict()
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    meta = {"progress": json.dumps(progress), "param_groups": json.dumps(opt_state["param_groups"])}
    return tensors, meta


def _unpack_state(path: Path, model: CrossModalNet, opt: torch.optim.Optimizer) -> tuple[dict | None, dict]:
    tensors, meta = load_tensors(path)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        return best, json.loads(meta["progress"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise AvelError(f"cannot resume from this state file ({exc}); delete it to restart", path) from exc


@contextmanager
def _cpu_threads(device: str, n: int = CPU_TRAIN_THREADS) -> Iterator[None]:
    """Run the body with `n` intra-op threads when training on the CPU, restoring the count after."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _progress_bar(enabled: bool, total: float, label: str) -> Iterator[Callable[..., None]]:
    """Yield `update(advance=0.0, info=None)`; a rich progress bar, or nothing when quiet."""
    if not enabled:
        yield lambda advance=0.0, info=None: None
        return
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("epoch {task.fields[epoch]}/{task.total:.0f}"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with stderr_progress(*columns) as bar:
        task = bar.add_task(label, total=total, info="", epoch=0)
        done = [0.0]  # epochs completed, fractional

        def update(advance: float = 0.0, info: str | None = None) -> None:
            done[0] += advance
            fields = {"info": info} if info is not None else {}
            bar.update(task, advance=advance, epoch=min(int(done[0] + 1e-6) + 1, int(total)), **fields)

        yield update


# ---- the run ----------------------------------------------------------------------------------------

def _check_same_run(run_dir: Path, model_cfg: CrossModalConfig, train_cfg: CrossModalTrainConfig) -> None:
    cfg = read_config(run_dir)
    want = {"model": model_cfg.to_dict(), "train": train_cfg.to_dict()}
    diff = [f"{part}.{k}" for part in want for k in sorted(set(want[part]) | set(cfg.get(part, {})))
            if want[part].get(k) != cfg.get(part, {}).get(k)]
    if diff:
        raise AvelError(f"holds a run with different settings ({', '.join(diff)}); choose another --out", run_dir)


def train_run(train: CrossModalData, val: CrossModalData, run_dir: str | Path, model_cfg: CrossModalConfig,
              train_cfg: CrossModalTrainConfig, *, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train into `run_dir` (resuming or reusing what is there) and return its metrics.json content.

    The run folder is locked while training (`output_lock`): a second writer fails at once."""
    from avel.io import output_lock, remove_temporaries

    with output_lock(run_dir):
        remove_temporaries(run_dir)  # a killed run's atomic-write temporaries
        return _train_run(train, val, Path(run_dir), model_cfg, train_cfg, device=device, progress=progress)


def _train_run(train: CrossModalData, val: CrossModalData, run_dir: Path, model_cfg: CrossModalConfig,
               train_cfg: CrossModalTrainConfig, *, device: str, progress: bool) -> dict[str, Any]:
    model_cfg.validate()
    train_cfg.validate()
    check_dims(train, model_cfg.audio_dim, model_cfg.visual_dim)
    check_dims(val, model_cfg.audio_dim, model_cfg.visual_dim)
    if (run_dir / CONFIG).exists():
        _check_same_run(run_dir, model_cfg, train_cfg)
        if (run_dir / METRICS).is_file():
            metrics = read_json(run_dir / METRICS)
            if metrics.get("finished"):
                return metrics
    else:
        write_config(run_dir, model_cfg, train_cfg.to_dict())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_cfg.seed)
        model = build_model(model_cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    feats = {"audio": torch.from_numpy(train.audio).to(device), "visual": torch.from_numpy(train.visual).to(device),
             "mask": train.event_mask, "positives": positive_pairs(train.event_mask)}

    best: dict[str, torch.Tensor] | None = None
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_epoch": None, "best_score": None}
    if (run_dir / STATE).is_file():
        best, state = _unpack_state(run_dir / STATE, model, opt)

    label = f"{model_cfg.method} ({len(train)} videos)"
    with _cpu_threads(device), _progress_bar(progress, train_cfg.epochs, label) as update:
        update(state["epoch"])
        for epoch in range(state["epoch"], train_cfg.epochs):
            model.train()
            rng = np.random.default_rng([train_cfg.seed, epoch])
            loss = EPOCHS[model_cfg.method](model, opt, feats, train_cfg, rng, update)
            AFTER_EPOCH.get(model_cfg.method, lambda m, f: None)(model, feats)
            res = evaluate_model(model, val, device)
            score = (res.accuracy("A2V") + res.accuracy("V2A")) / 2 if res.evaluated else None
            state["history"].append({"epoch": epoch + 1, "train_loss": loss, "val_A2V": res.accuracy("A2V"),
                                     "val_V2A": res.accuracy("V2A"), "val_evaluated": res.evaluated})
            # keep the best validation epoch; with no evaluable validation video, the last one
            if score is None or state["best_score"] is None or score > state["best_score"]:
                state["best_epoch"], state["best_score"] = epoch + 1, score
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state["epoch"] = epoch + 1
            save_tensors(run_dir / STATE, *_pack_state(model, opt, best, state))
            update(0.0, f"loss {loss:.4f}  val A2V {res.accuracy('A2V'):.1f} V2A {res.accuracy('V2A'):.1f}")

    assert best is not None
    model.load_state_dict(best)
    save_model(run_dir, model)
    metrics = {"finished": True, "method": model_cfg.method, "best_epoch": state["best_epoch"],
               "selection": "best mean of A2V and V2A on the validation match split" if state["best_score"] is not None
               else "last epoch (the validation split has no evaluable video)",
               "val_score": state["best_score"], "train_videos": len(train), "val_videos": len(val),
               "history": state["history"]}
    metrics = _finite(metrics)
    write_json(run_dir / METRICS, metrics)
    return metrics


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN -> None."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
