"""Training recipes: named presets of TrainConfig fields (`avel train --recipe NAME`).

A recipe is one row of `RECIPES`: the TrainConfig fields it sets, separately for supervised and
weakly-supervised (W-) models. `recipe_config(name, weak, **overrides)` builds the TrainConfig;
explicit options win over the preset, and `TrainConfig.recipe` records which preset the run started
from (config.json keeps every field, so a run shows exactly what it trained with).

"avel" (default): TrainConfig's defaults: cross-entropy, Adam 1e-3, batch 64, batches reshuffled
    every epoch, validation after every epoch on the validation split, checkpoint = best validation
    score (per-second accuracy; weak models: video-level accuracy, MIL pooled; ties to the lower
    validation loss), early stopping, standardized inputs.

"authors": the training loop of the authors' released scripts (YapengTian/AVE-ECCV18,
    supervised_main.py and weak_supervised_main.py), read from their code:
      - loss: nn.MultiLabelSoftMarginLoss on the softmax outputs (loss "authors"); the weak script's
        network max-pools the per-second scores over time before the softmax (loss "authors-max");
      - optimizer: Adam, lr 1e-3, no weight decay, batch 64, the last incomplete batch skipped
        (`nb_batch = len // batch_size`);
      - StepLR(step_size=15000, gamma=0.1) stepped once per batch, *before* optimizer.step(): the
        k-th optimizer step (1-based) uses lr 1e-3 * 0.1 ** (k // 15000) (see `step_lr`);
      - batches in split order (train_order.h5's order), never shuffled; weak: the training videos
        followed by the background-only videos, as their AVE_weak_Dataset concatenates them;
      - 300 epochs (weak: 250, their weak script's default); no early stopping;
      - validation after 0-based epochs 0, 5, 10, ... (`if epoch % 5 == 0`), i.e. 1-based 1, 6, 11;
      - what they select on: supervised_main.py's val() reads `dir_order_test`: the checkpoint kept
        is the first one with the highest per-second accuracy on the *test* split (strictly greater
        than the best so far, starting from 0); weak_supervised_main.py validates on the validation
        split (per-second accuracy) but never updates `best_val_acc`, so it overwrites the checkpoint
        at every validation with accuracy > 0: the last such validated epoch (normally 246 of 250);
      - features fed unscaled (no standardization).
    Not reproduced: their weight initialisation (xavier_uniform on some layers) and CUDA; avel's
    networks keep their own initialisation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from avel.errors import AvelError
from avel.train.config import SELECTIONS, TrainConfig  # noqa: F401 (SELECTIONS: re-exported)


@dataclass(frozen=True)
class Recipe:
    """One preset: the TrainConfig fields it sets for supervised and for weak models."""

    description: str
    supervised: dict[str, Any] = field(default_factory=dict)
    weak: dict[str, Any] = field(default_factory=dict)


NEVER = 10**9  # patience that no run reaches: no early stopping

_AUTHORS_COMMON: dict[str, Any] = {
    "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "shuffle": False, "drop_last": True, "val_every": 5,
    "lr_step": 15000, "lr_gamma": 0.1, "patience": NEVER, "standardize": False,
}

RECIPES: dict[str, Recipe] = {
    "avel": Recipe("cross-entropy, shuffled batches, validation every epoch on the validation split, best-validation "
                   "checkpoint, early stopping, standardized inputs (TrainConfig's defaults)"),
    "authors": Recipe(
        "the authors' released loop: MultiLabelSoftMarginLoss on softmax, Adam 1e-3 with StepLR(15000 iterations, "
        "x0.1) per batch, batches in split order, 300 epochs (weak: 250), validation every 5 epochs; keeps the best "
        "per-second test accuracy (weak: the last validation)",
        supervised={**_AUTHORS_COMMON, "loss": "authors", "epochs": 300, "val_split": "test",
                    "selection": "first-best"},
        weak={**_AUTHORS_COMMON, "loss": "authors-max", "epochs": 250, "val_split": "val", "selection": "last"},
    ),
}


def recipe_fields(name: str, weak: bool) -> dict[str, Any]:
    """The TrainConfig fields recipe `name` sets (with `recipe` itself)."""
    if name not in RECIPES:
        raise AvelError(f"unknown recipe '{name}'; valid: {', '.join(RECIPES)}")
    r = RECIPES[name]
    return {"recipe": name, **(r.weak if weak else r.supervised)}


def recipe_config(name: str, weak: bool, **overrides: Any) -> TrainConfig:
    """TrainConfig for recipe `name`, with explicit `overrides` (e.g. seed, epochs) applied on top."""
    cfg = dataclasses.replace(TrainConfig(), **{**recipe_fields(name, weak), **overrides})
    cfg.validate()
    return cfg


# ---------------------------------------------------------------- hooks used by the training loop

def epoch_batches(n: int, cfg: TrainConfig, epoch: int) -> list[np.ndarray]:
    """The global batches (positions 0..n-1) of 0-based `epoch`: shuffled with a per-epoch seed, or
    in order (`shuffle=False`); the last short batch dropped with `drop_last`."""
    if cfg.shuffle:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g).numpy()
    else:
        order = np.arange(n)
    bs = cfg.batch_size
    stop = (n // bs) * bs if cfg.drop_last else n
    return [order[i:i + bs] for i in range(0, stop, bs)]


def step_lr(cfg: TrainConfig, step: int) -> float:
    """Learning rate of the `step`-th optimizer step (1-based). With `lr_step` = S > 0 this is
    StepLR(step_size=S, gamma) stepped before every optimizer step, as the authors call it:
    lr * gamma ** (step // S), so step S is the first at the decayed rate. lr_step 0: constant."""
    return cfg.lr * cfg.lr_gamma ** (step // cfg.lr_step) if cfg.lr_step > 0 else cfg.lr


def set_step_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """Put step_lr(cfg, step) into every parameter group (a no-op for a constant rate)."""
    if cfg.lr_step > 0:
        lr = step_lr(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr


def validates(cfg: TrainConfig, epoch: int) -> bool:
    """Whether 0-based `epoch` ends with a validation: epochs 0, k, 2k, ... for val_every = k."""
    return epoch % cfg.val_every == 0


def selection_key(cfg: TrainConfig, weak: bool, val: dict[str, float], epoch: int) -> tuple[float, ...]:
    """The key checkpoint selection maximises (a new checkpoint when strictly greater than the kept one).

    best        avel: (score, -val loss), score = per-second accuracy (weak: video-level accuracy)
    first-best  authors' supervised script: per-second accuracy only, the first epoch reaching the best
    last        authors' weak script: every validation with accuracy > 0 replaces the checkpoint (their
                `if val_acc > best_val_acc` with best_val_acc never updated from 0); the first validation
                is kept whatever its accuracy, so that a checkpoint exists
    """
    if cfg.selection == "last":
        return (float(epoch),) if val["val_accuracy"] > 0 else (-1.0,)
    if cfg.selection == "first-best":
        return (round(val["val_accuracy"], 6),)
    score = val["val_video_accuracy"] if weak else val["val_accuracy"]
    return (round(score, 6), -round(val["val_loss"], 9))

