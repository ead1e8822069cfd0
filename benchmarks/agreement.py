"""Shared by bench_precision.py and bench_fps.py: rendered 10-s clips with events, and how often the authors'
A+V-att network (avel's `authors-A+V-att`, random weights) predicts the same class per second from two
feature sets of the same clips.

Random backbone and model weights mean nothing semantically, but the comparison is the one a user
cares about: does the cheaper feature path change the model's decision for a second? The lines print
how many distinct classes the model predicts, so a degenerate model (one class everywhere, trivially
"agreeing") shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avel.features.render import ClipSpec, render_clip

CLIP_SECONDS = 10  # s per clip, as AVE
CLIP_SIZE = (640, 360)  # pixels, like a YouTube clip
CLIP_FPS = 25  # frames per second of the rendered clips
COLOURS = ((230, 40, 40), (30, 30, 230), (40, 200, 90), (240, 220, 30), (250, 250, 250), (10, 10, 10))
BACKDROPS = ((90, 110, 90), (200, 200, 210), (40, 40, 60), (150, 90, 60))
TONES_HZ = (220.0, 440.0, 660.0, 880.0, 330.0)
MODEL = "authors-A+V-att"


def render_clips(folder: Path, count: int) -> list[Path]:
    """`count` 10-s clips (rendered once into `folder`): a shape and a tone, together during a 2-6-s event,
    with shape-only and tone-only distractor seconds; colours, backdrops, shapes and tones vary."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"agree{i:02d}.mp4"
        if not path.is_file():
            rng = np.random.default_rng(100 + i)
            start, length = int(rng.integers(0, 6)), int(rng.integers(2, 7))
            event = set(range(start, min(CLIP_SECONDS, start + length)))
            others = [s for s in range(CLIP_SECONDS) if s not in event]
            shape_only, tone_only = (set(rng.choice(others, 1).tolist()) if others else set() for _ in range(2))
            render_clip(path, ClipSpec(seconds=CLIP_SECONDS, fps=CLIP_FPS, width=CLIP_SIZE[0], height=CLIP_SIZE[1],
                                       shape_seconds=event | shape_only, tone_seconds=event | tone_only,
                                       colour=COLOURS[i % len(COLOURS)], background=BACKDROPS[i % len(BACKDROPS)],
                                       shape=("square", "disc")[i % 2], tone_hz=TONES_HZ[i % len(TONES_HZ)], seed=i))
        out.append(path)
    return out


def authors_model(seed: int = 0) -> torch.nn.Module:
    """The authors' A+V-att architecture with random (seeded) weights, fp32, eval mode."""
    from avel.models.registry import ModelConfig, create_model

    torch.manual_seed(seed)
    return create_model(ModelConfig(name=MODEL)).eval()


@torch.inference_mode()
def predictions(model: torch.nn.Module, features: list) -> np.ndarray:
    """(clips, T) argmax class per second from a list of VideoFeatures."""
    return np.stack([model(torch.from_numpy(f.audio)[None], torch.from_numpy(f.visual)[None]).logits[0]
                     .argmax(-1).numpy() for f in features])


def agreement_line(model: torch.nn.Module, reference: list, other: list) -> tuple[float, str]:
    """Share of seconds whose predicted class is the same from both feature sets, and a line saying so."""
    a, b = predictions(model, reference), predictions(model, other)
    same = float((a == b).mean())
    return same, (f"{int((a == b).sum())}/{a.size} seconds = {100 * same:.1f}% (the model predicts "
                  f"{len(np.unique(a))} distinct classes over these seconds)")
