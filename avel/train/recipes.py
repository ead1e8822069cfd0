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

"cmran", "psp", "cmbs": the training loop of each later method's public repository, read from its
    scripts. The loss is not a recipe field: CMRAN, PSP and CMBS train with their own objective
    (`method_loss`, avel.train.losses), whose weights are model options set to the scripts' values
    (PSP's LAMBDA = 100 is ModelConfig.extra["avps_weight"]; CMBS's alpha/beta/gamma from
    configs/main.json and weak.json); the recipes leave `loss` at "ce". All three shuffle the
    training videos every epoch, feed the features unscaled, never stop early, and keep their
    checkpoint by per-second accuracy on the *test* split (`val_split` = test), as their scripts do.
      cmran (FloretCat/CMRAN): supv_main.py with supv_train.sh over configs/default_config.yaml
        (configs/opts.py options override the yaml): Adam lr 5e-4 (their weight_decay 5e-4 never
        reaches the optimizer: Adam(params, lr)), batch 32, last short batch kept, 200 epochs,
        MultiStepLR(milestones [10, 20, 30], gamma 0.5) stepped after every epoch, clip_grad_norm_
        0.1, test evaluated after every epoch (eval_freq 1) and saved when strictly better than the
        best so far (selection "first-best"). weakly_main.py with weakly_train.sh: the same, but
        MultiStepLR [5, 20, 40] and clipping 0.5 (the yaml's: the weak script passes none); training
        on the training videos followed by the background-only ones; the test accuracy it saves on is
        per second, against the segment labels.
      psp (jasongief/PSP_CVPR_2021): fully_supervised_main.py with Optim.py's ScheduledOptim: Adam lr
        1e-3, batch 128, `nb_batch = len // batch_size` (last short batch skipped), 300 epochs, lr x0.8
        by update_lr() after 0-based epochs e with (e + 1) % 60 == 0 and e < 170 (after 59 and 119:
        lr_milestones [60, 120], gamma 0.8), no clipping, test evaluated when `epoch % 5 == 0 and
        epoch != 0` (val_every 5, val_start 1: 0-based 5, 10, ..., 295, 1-based 6, ..., 296) and saved
        when `test_acc >= best_test_acc` (selection "last-best": the last epoch reaching the best).
        weakly_supervised_main.py: the same with update_lr() when (e + 1) % 80 == 0 and e < 200
        (milestones [80, 160]), training videos plus background-only videos. Their val() on the
        validation split only prints.
      cmbs (marmot-xy/CMBS): supv_main.py with supv_train.sh over configs/default_config.yaml: Adam lr
        7e-4, batch 64, 200 epochs, MultiStepLR [10, 20, 30] x0.5 per epoch, clipping 0.5, test after
        every epoch, saved when strictly better ("first-best"). weakly_main.py with weakly_train.sh:
        lr 6e-4, batch 64, MultiStepLR [10, 20, 40] x0.5, clipping 0.5, 200 epochs, training plus
        background-only videos, saved on strictly better per-second test accuracy.
    Not reproduced: float64 training (CMRAN's and CMBS's `model.double()`: avel trains in fp32, or
    bf16 where --precision says so), nn.DataParallel / CUDA, their fixed seeds (CMRAN 456 / 666, PSP
    123, CMBS 43) and their loaders' shuffling order, the weight initialisation of their code
    (avel's networks keep their own), and their skipping of a first validation at accuracy 0 (avel
    keeps the first validated epoch whatever its accuracy, so that a checkpoint exists).

A recipe is a preset, not a model: any recipe may train any model (`--recipe psp --model A+V-att`
trains A+V-att with PSP's schedule and selection, and its own cross-entropy loss). The one refusal is
the trainer's: a model with its own `method_loss` refuses a recipe that sets another loss (the
"authors" recipe's MultiLabelSoftMarginLoss), with a one-line error before anything is written.
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

# The later methods' loops (see the module docstring for the file each value comes from)
_METHOD_COMMON: dict[str, Any] = {
    "weight_decay": 0.0, "shuffle": True, "patience": NEVER, "standardize": False, "val_split": "test",
}
_CMRAN: dict[str, Any] = {**_METHOD_COMMON, "lr": 5e-4, "batch_size": 32, "drop_last": False, "epochs": 200,
                          "lr_gamma": 0.5, "val_every": 1, "val_start": 0, "selection": "first-best"}
_PSP: dict[str, Any] = {**_METHOD_COMMON, "lr": 1e-3, "batch_size": 128, "drop_last": True, "epochs": 300,
                        "lr_gamma": 0.8, "clip_grad_norm": None, "val_every": 5, "val_start": 1,
                        "selection": "last-best"}
_CMBS: dict[str, Any] = {**_METHOD_COMMON, "batch_size": 64, "drop_last": False, "epochs": 200, "lr_gamma": 0.5,
                         "clip_grad_norm": 0.5, "val_every": 1, "val_start": 0, "selection": "first-best"}

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
    "cmran": Recipe(
        "CMRAN's supv_main.py / weakly_main.py: Adam 5e-4, batch 32, MultiStepLR per epoch (10, 20, 30; weak 5, 20, "
        "40; x0.5), gradient norm clipped to 0.1 (weak 0.5), 200 epochs, test evaluated every epoch; keeps the first "
        "best per-second test accuracy",
        supervised={**_CMRAN, "lr_milestones": (10, 20, 30), "clip_grad_norm": 0.1},
        weak={**_CMRAN, "lr_milestones": (5, 20, 40), "clip_grad_norm": 0.5},
    ),
    "psp": Recipe(
        "PSP's fully_supervised_main.py / weakly_supervised_main.py: Adam 1e-3, batch 128 (last short batch skipped), "
        "lr x0.8 after epochs 60 and 120 (weak 80, 160), 300 epochs, test evaluated every 5 epochs from epoch 6; "
        "keeps the last epoch reaching the best per-second test accuracy (>=)",
        supervised={**_PSP, "lr_milestones": (60, 120)},
        weak={**_PSP, "lr_milestones": (80, 160)},
    ),
    "cmbs": Recipe(
        "CMBS's supv_main.py / weakly_main.py: Adam 7e-4 (weak 6e-4), batch 64, MultiStepLR per epoch (10, 20, 30; "
        "weak 10, 20, 40; x0.5), gradient norm clipped to 0.5, 200 epochs, test evaluated every epoch; keeps the "
        "first best per-second test accuracy",
        supervised={**_CMBS, "lr": 7e-4, "lr_milestones": (10, 20, 30)},
        weak={**_CMBS, "lr": 6e-4, "lr_milestones": (10, 20, 40)},
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


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based `epoch` under `lr_milestones`: MultiStepLR(milestones, gamma) stepped
    once after every epoch, i.e. lr * gamma ** (number of milestones <= epoch), so epoch m is the first
    at the rate decayed by milestone m. No milestones: lr."""
    return cfg.lr * cfg.lr_gamma ** sum(1 for m in cfg.lr_milestones if m <= epoch)


def scheduled_lr(cfg: TrainConfig, epoch: int, step: int) -> float:
    """The rate of optimizer step `step` (1-based over the run) in 0-based `epoch`: the per-step
    StepLR (`lr_step`), the per-epoch multi-step schedule (`lr_milestones`) or the constant lr."""
    return step_lr(cfg, step) if cfg.lr_step > 0 else epoch_lr(cfg, epoch)


def set_step_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int, epoch: int = 0) -> None:
    """Put scheduled_lr(cfg, epoch, step) into every parameter group (a no-op for a constant rate)."""
    if cfg.lr_step > 0 or cfg.lr_milestones:
        lr = scheduled_lr(cfg, epoch, step)
        for group in opt.param_groups:
            group["lr"] = lr


def clip_gradients(model: torch.nn.Module, cfg: TrainConfig) -> float | None:
    """Clip the L2 norm of all of `model`'s gradients together to `clip_grad_norm`
    (torch.nn.utils.clip_grad_norm_); the norm before clipping, or None when clipping is off."""
    if cfg.clip_grad_norm is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm))


def validates(cfg: TrainConfig, epoch: int, has_checkpoint: bool = True) -> bool:
    """Whether 0-based `epoch` ends with a validation: epochs e >= val_start with e % val_every == 0
    (0, k, 2k, ... for val_every = k; PSP: 5, 10, ... with val_start 1). A run's last epoch is also
    validated when no earlier one was (`has_checkpoint` False), so that every run has a checkpoint."""
    if epoch >= cfg.val_start and epoch % cfg.val_every == 0:
        return True
    return not has_checkpoint and epoch == cfg.epochs - 1


def selection_key(cfg: TrainConfig, weak: bool, val: dict[str, float], epoch: int) -> tuple[float, ...]:
    """The key checkpoint selection maximises (a new checkpoint when strictly greater than the kept one).

    best        avel: (score, -val loss), score = per-second accuracy (weak: video-level accuracy)
    first-best  authors' supervised script, CMRAN, CMBS: per-second accuracy only, the first epoch
                reaching the best (their `if acc > best`)
    last-best   PSP: (per-second accuracy, epoch): a later epoch as accurate as the kept one replaces
                it (their `if test_acc >= best_test_acc`), so the last epoch reaching the best is kept
    last        authors' weak script: every validation with accuracy > 0 replaces the checkpoint (their
                `if val_acc > best_val_acc` with best_val_acc never updated from 0); the first validation
                is kept whatever its accuracy, so that a checkpoint exists
    """
    if cfg.selection == "last":
        return (float(epoch),) if val["val_accuracy"] > 0 else (-1.0,)
    if cfg.selection == "first-best":
        return (round(val["val_accuracy"], 6),)
    if cfg.selection == "last-best":
        return (round(val["val_accuracy"], 6), float(epoch))
    score = val["val_video_accuracy"] if weak else val["val_accuracy"]
    return (round(score, 6), -round(val["val_loss"], 9))
