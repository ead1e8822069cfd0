"""Parameters and inference speed of registered models on this machine (fp32, no gradients).

One measurement, used by `benchmarks/bench_methods.py` and by `avel reproduce`'s later-methods table:
random 10-s clips (7x7x512 visual maps, 128-d audio) in batches; each model gets one warm-up pass,
then the models take turns for `reps` rounds and each keeps its fastest pass, so that a change in the
machine's load during the measurement affects them alike. Compare numbers within one measurement.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from avel.models.registry import ModelConfig, create_model

T, GRID, DV, DA = 10, 7, 512, 128  # AVE: 10 s, VGG-19 pool5 7x7x512, VGGish 128


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (every tensor the model trains or stores as a parameter)."""
    return sum(p.numel() for p in model.parameters())


def random_clips(videos: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`videos` random clips: audio (N, 10, 128), visual (N, 10, 7, 7, 512), fp32."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(videos, T, DA, generator=g), torch.rand(videos, T, GRID, GRID, DV, generator=g)


@torch.inference_mode()
def timed_pass(model: nn.Module, audio: torch.Tensor, visual: torch.Tensor, batch: int) -> float:
    """Seconds for one forward pass over all clips, `batch` clips at a time."""
    t = time.perf_counter()
    for i in range(0, len(audio), batch):
        model(audio[i:i + batch], visual[i:i + batch])
    return time.perf_counter() - t


def build_models(configs: Mapping[str, ModelConfig]) -> dict[str, nn.Module]:
    """label -> the model in eval mode, fp32, built with torch seed 0."""
    models = {}
    for label, cfg in configs.items():
        torch.manual_seed(0)
        models[label] = create_model(cfg).float().eval()
    return models


def measure(models: Mapping[str, nn.Module], *, videos: int = 64, batch: int = 16, reps: int = 3,
            seed: int = 0) -> dict[str, dict[str, Any]]:
    """label -> {parameters, seconds (fastest pass over `videos` clips), segments_per_second}."""
    if videos < 1 or batch < 1 or reps < 1:
        raise ValueError(f"videos, batch and reps must be >= 1 (got {videos}, {batch}, {reps})")
    audio, visual = random_clips(videos, seed)
    for model in models.values():  # warm-up
        timed_pass(model, audio, visual, batch)
    best = {label: float("inf") for label in models}
    for _ in range(reps):
        for label, model in models.items():
            best[label] = min(best[label], timed_pass(model, audio, visual, batch))
    return {label: {"parameters": parameter_count(model), "seconds": best[label],
                    "segments_per_second": videos * T / best[label]} for label, model in models.items()}


def measure_configs(configs: Mapping[str, ModelConfig], *, videos: int = 64, batch: int = 16,
                    reps: int = 3) -> dict[str, Any]:
    """`measure` over freshly built models, with the settings and the machine (avel.precision.machine_name)."""
    from avel.precision import machine_name

    return {"machine": machine_name("cpu"), "threads": torch.get_num_threads(), "precision": "fp32",
            "videos": videos, "batch": batch, "reps": reps, "seconds_per_video": T,
            "models": measure(build_models(configs), videos=videos, batch=batch, reps=reps)}
