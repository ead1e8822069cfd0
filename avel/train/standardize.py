"""Per-channel input standardization: the training recipe's answer to features of any scale.

Users bring features from other extractors, whose scale can differ from VGGish / VGG-19 by orders of
magnitude (AVE-Synth v1's pooled visual vectors are ~15x smaller than its audio features). Adam's
first steps, the attention's tanh and the LSTM gates all depend on the input scale, so the same
recipe would learn at different speeds on data that differ only by a constant factor.

Before training, the mean and standard deviation of every feature channel are measured on the
training split: audio 128 channels, visual 512 channels (over all frames and all 7x7 cells, so a
map is standardized per channel like a batch-norm layer would, and its pooled vector scales the
same way), audio maps 512 channels. `attach` adds them to the model as buffers of a submodule
`input_std` plus a forward pre-hook that standardizes the inputs, so they are saved in
model.safetensors with the weights and applied wherever the model runs (evaluate, localize, the
report's figures). `ensure_for_state` re-attaches them when a checkpoint holding them is loaded.
TrainConfig.standardize=False (`--no-standardize`) turns it off for exact reproduction.
"""

from __future__ import annotations

import hashlib
import inspect
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

PREFIX = "input_std"  # submodule name: its buffers appear as input_std.<key>_mean / input_std.<key>_std
INPUT_KEYS = ("audio", "visual", "audio_map")  # model inputs standardized per channel (last axis)
FIT_CHUNK = 64  # rows read per step while fitting (a visual row is 1 MB as float32)
REL_FLOOR = 1e-3  # a channel's std is at least this fraction of the median channel std (dead channels)

# (id of the array, digest of the rows) -> (weak reference to the array, (mean, std)): the runs of one
# process (e.g. a reproduction worker training many cells on one dataset) fit each input once.
_FITTED: dict[tuple[int, str], tuple[Any, tuple[np.ndarray, np.ndarray]]] = {}


def fit(arrays: Mapping[str, Any], rows: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (mean, std) of each array in `arrays` whose key is in INPUT_KEYS, over `rows`.

    Accumulated in float64 over row chunks, so a split larger than memory is fine. The std floor is
    relative (REL_FLOOR x the median channel std), so rescaling the features rescales the statistics
    exactly and the standardized inputs do not change.
    """
    from avel.train.data import read_rows

    rows = np.sort(np.asarray(rows, dtype=np.int64))
    digest = hashlib.blake2b(rows.tobytes(), digest_size=16).hexdigest()
    out = {}
    for key, arr in arrays.items():
        if key not in INPUT_KEYS:
            continue
        hit = _FITTED.get((id(arr), digest))
        if hit is not None and hit[0]() is arr:  # the same, still living array object: same statistics
            out[key] = hit[1]
            continue
        c = int(arr.shape[-1])
        s1, s2, n = np.zeros(c), np.zeros(c), 0
        for i in range(0, len(rows), FIT_CHUNK):
            x = read_rows(arr, rows[i:i + FIT_CHUNK], np.float64).reshape(-1, c)
            s1 += x.sum(0)
            s2 += np.einsum("ij,ij->j", x, x)
            n += len(x)
        mean = s1 / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 0.0))
        live = std[std > 0]
        floor = REL_FLOOR * float(np.median(live)) if len(live) else 1.0
        out[key] = (mean.astype(np.float32), np.maximum(std, floor).astype(np.float32))
        try:
            _FITTED[(id(arr), digest)] = (weakref.ref(arr), out[key])
        except TypeError:  # an array type without weak references: not cached
            pass
    return out


class InputStandardizer(nn.Module):
    """Buffers <key>_mean and <key>_std (C,) for each standardized input; `forward` maps a dict of inputs."""

    def __init__(self, stats: Mapping[str, tuple[Any, Any]]) -> None:
        super().__init__()
        self.keys = tuple(k for k in INPUT_KEYS if k in stats)
        for k in self.keys:
            mean, std = stats[k]
            # copies: loading a checkpoint writes into the buffers, never into fit()'s cached arrays
            self.register_buffer(f"{k}_mean", torch.tensor(np.asarray(mean, dtype=np.float32)))
            self.register_buffer(f"{k}_std", torch.tensor(np.asarray(std, dtype=np.float32)))

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        out = dict(inputs)
        for k in self.keys:
            x = out.get(k)
            if x is not None:
                mean, std = getattr(self, f"{k}_mean"), getattr(self, f"{k}_std")
                out[k] = (x - mean.to(x.dtype)) / std.to(x.dtype)
        return out


def _pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Standardize the inputs however they were passed (by keyword, as avel does, or by position)."""
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
    named = getattr(module, PREFIX)(dict(bound.arguments))
    return (), named


def attach(model: nn.Module, stats: Mapping[str, tuple[Any, Any]]) -> nn.Module:
    """Give `model` an `input_std` submodule with `stats` and a pre-hook applying it; returns the model."""
    if hasattr(model, PREFIX):
        raise ValueError("the model already standardizes its inputs")
    model.add_module(PREFIX, InputStandardizer(stats))
    model.register_forward_pre_hook(_pre_hook, with_kwargs=True)
    return model


def stats_in_state(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The standardization statistics held in a state dict ({} for a run trained without)."""
    return {k: (state[f"{PREFIX}.{k}_mean"], state[f"{PREFIX}.{k}_std"]) for k in INPUT_KEYS
            if f"{PREFIX}.{k}_mean" in state and f"{PREFIX}.{k}_std" in state}


def ensure_for_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Attach a standardizer shaped like the one in `state` (if any) so that it loads strictly."""
    stats = stats_in_state(state)
    if stats and not hasattr(model, PREFIX):
        attach(model, stats)
    return model


def describe(stats: Mapping[str, tuple[Any, Any]]) -> dict[str, dict[str, float]]:
    """A JSON summary (median channel mean and std per input) for results and logs."""
    return {k: {"channels": int(len(m)), "median_mean": round(float(np.median(np.asarray(m))), 6),
                "median_std": round(float(np.median(np.asarray(s))), 6)} for k, (m, s) in stats.items()}
