"""Training configuration (stored as `config.json` in every run directory)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from avel.errors import AvelError, dataclass_from_dict

# Fields that change neither the numbers a run computes nor what it means: a run may be resumed
# with different values (e.g. on another device).
RUNTIME_FIELDS = ("device", "num_threads", "cache_gb", "tune_allocator", "precision")
# the presets TrainConfig.recipe may name (their fields: avel.train.recipes.RECIPES)
RECIPE_NAMES = ("avel", "authors", "cmran", "psp", "cmbs")
SELECTIONS = ("best", "first-best", "last-best", "last")  # checkpoint selection rules (avel.train.recipes.selection_key)
# Result fields added after run records were first written: result_fields() leaves each out while it
# holds its default, so that records written before it existed (avel reproduce's) still match.
LATER_FIELDS = ("lr_milestones", "clip_grad_norm", "val_start")


@dataclass
class TrainConfig:
    """How to train a localizer. Defaults: the authors' optimiser (Adam, lr 1e-3, batch 64) with
    validation-based checkpoint selection and early stopping instead of their fixed 300 epochs."""

    epochs: int = 100  # upper bound on epochs; early stopping usually ends the run far sooner
    patience: int = 8  # stop after this many epochs in which neither the validation score nor the validation loss improved
    # Early stopping never ends a run before this many optimizer steps: on a small dataset an epoch is
    # a few steps, and `patience` epochs of the initial majority-class (background) plateau would
    # otherwise stop it before it learns anything. 250 steps is under 5 epochs of AVE at batch 64, so
    # it does not bind there (patience already trains at least 9 epochs = 477 steps).
    min_steps: int = 250
    # Standardize every input channel (audio 128, visual 512 over all 7x7 cells, audio maps 512) with the
    # mean and std of the training split, stored in the checkpoint and applied at evaluate/localize time
    # (avel.train.standardize): training then behaves the same whatever the scale of the features.
    # False (`--no-standardize`) feeds the features as they are, as the authors' code does.
    standardize: bool = True
    batch_size: int = 64  # global batch (split across processes under torchrun)
    lr: float = 1e-3  # Adam learning rate (authors: 1e-3)
    weight_decay: float = 0.0  # Adam L2 penalty (authors: none)
    loss: str = "ce"  # "ce": per-second cross-entropy on logits; "authors": MultiLabelSoftMarginLoss on softmax
    seed: int = 0  # seeds weights, shuffling and dropout; seeded CPU runs are bit-for-bit repeatable
    train_split: str = "train"  # dataset split the model is fitted on
    val_split: str = "val"  # split that selects the checkpoint and drives early stopping
    test_split: str = "test"  # split evaluated once, at the end, with the selected checkpoint
    use_noisy: bool = True  # weak models: add the background-only videos (ds.noisy) to training when present
    # The preset these fields started from (avel.train.recipes): "avel" (these defaults), "authors"
    # (the 2018 authors' loop) or "cmran", "psp", "cmbs" (each later method's own loop).
    recipe: str = "avel"
    shuffle: bool = True  # reshuffle the training rows every epoch (authors: batches in split order)
    drop_last: bool = False  # skip the last incomplete batch of an epoch (authors: len // batch_size batches)
    val_every: int = 1  # validate after 0-based epochs 0, k, 2k, ... (authors: 5, their `epoch % 5 == 0`)
    # No validation before this 0-based epoch (PSP: 1, their `epoch != 0`); a run that would end with no
    # validation at all validates its last epoch, so that a checkpoint exists (avel.train.recipes.validates).
    val_start: int = 0
    lr_step: int = 0  # StepLR stepped per batch: lr * lr_gamma ** (step // lr_step); 0 = constant (authors: 15000)
    # Multi-step schedule per epoch (MultiStepLR stepped after every epoch): 0-based epoch e trains at
    # lr * lr_gamma ** (number of milestones <= e); () = none. Exclusive with lr_step (CMRAN: 10, 20, 30).
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1  # decay factor of lr_step or lr_milestones, whichever is on (authors: 0.1)
    # Clip the L2 norm of all gradients together to this value before every optimizer step
    # (torch.nn.utils.clip_grad_norm_); None = no clipping (CMRAN: 0.1, CMBS: 0.5).
    clip_grad_norm: float | None = None
    # Checkpoint kept: "best" (validation score, ties to the lower validation loss), "first-best" (the
    # first epoch with the highest per-second accuracy: the authors' supervised script, CMRAN, CMBS),
    # "last-best" (the last epoch at least as accurate as every earlier one: PSP's `>=`) or "last" (the
    # last validated epoch: the authors' weak script). See avel.train.recipes.selection_key.
    selection: str = "best"
    # A run directory whose attention + LSTM weights start this run (avel.train.init_from: DMRN fine-tuned
    # from an A+V-att run, as the authors trained theirs); None = the model's own initialisation.
    init_from: str | None = None
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (cuda when available)
    num_threads: int | None = None  # torch CPU threads (None: torch's default)
    cache_gb: float = 4.0  # keep a split's features in memory (float32) when they fit in this many GiB
    tune_allocator: bool = True  # glibc: keep large freed buffers instead of unmapping them (faster CPU steps)
    # compute precision (avel.precision): auto (bf16 where the CPU declares a bf16 unit and its products
    # measure >= 1.5x fp32, once per machine, or the GPU supports it; fp16 + loss scaling on GPUs without bf16), fp32, bf16. Weights and optimizer
    # state stay fp32. A runtime field: a run may be resumed in another precision (config.json records it).
    precision: str = "auto"

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(self.lr_milestones)  # a list given in Python compares equal to the stored tuple

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Any = None) -> "TrainConfig":
        """From stored JSON: every field's type and range checked, errors naming `path`."""
        return dataclass_from_dict(cls, d, "train config", path)

    def result_fields(self) -> dict[str, Any]:
        """The fields that determine the run's results (what resuming must match); a LATER_FIELDS
        field at its default is left out, as records written before it existed lack it."""
        default = TrainConfig()
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS
                and not (k in LATER_FIELDS and v == getattr(default, k))}

    def validate(self) -> None:
        from avel.precision import PRECISIONS
        from avel.train.losses import LOSSES

        checks = {
            "epochs must be >= 1": self.epochs >= 1,
            "patience must be >= 1": self.patience >= 1,
            "min_steps must be >= 0": self.min_steps >= 0,
            "batch_size must be >= 1": self.batch_size >= 1,
            "lr must be > 0": self.lr > 0,
            "weight_decay must be >= 0": self.weight_decay >= 0,
            "seed must be >= 0": self.seed >= 0,
            "num_threads must be >= 1": self.num_threads is None or self.num_threads >= 1,
            "cache_gb must be >= 0": self.cache_gb >= 0,
            f"loss must be one of {', '.join(LOSSES)}": self.loss in LOSSES,
            f"recipe must be one of {', '.join(RECIPE_NAMES)}": self.recipe in RECIPE_NAMES,
            "val_every must be >= 1": self.val_every >= 1,
            "lr_step must be >= 0": self.lr_step >= 0,
            "val_start must be >= 0": self.val_start >= 0,
            "lr_gamma must be in (0, 1]": 0 < self.lr_gamma <= 1,
            "lr_milestones must be increasing epochs >= 1":
                all(m >= 1 for m in self.lr_milestones)
                and all(a < b for a, b in zip(self.lr_milestones, self.lr_milestones[1:])),
            "lr_step and lr_milestones exclude each other": not (self.lr_step > 0 and self.lr_milestones),
            "clip_grad_norm must be > 0 (or null: no clipping)": self.clip_grad_norm is None or self.clip_grad_norm > 0,
            f"selection must be one of {', '.join(SELECTIONS)}": self.selection in SELECTIONS,
            f"precision must be one of {', '.join(PRECISIONS)}": self.precision in PRECISIONS,
        }
        for message, ok in checks.items():
            if not ok:
                raise AvelError(f"invalid training config: {message}")
