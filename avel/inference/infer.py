"""Inference over videos of any length with a model trained on fixed-length clips.

A model trained on 10-s clips sees 10-s windows: shorter videos run as they are (the LSTMs take
any length), longer ones as windows of the training length with a hop of half a window (the last
window ends at the video's end), and each second's probabilities (and attention) are the mean
over the windows that contain it. This keeps the temporal context the LSTMs saw in training,
instead of running them over minutes of video they were never trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

WINDOW_BATCH = 64  # windows per model call (progress is reported after each)


def window_starts(num_segments: int, window: int, hop: int) -> list[int]:
    """First second of every window: 0, hop, 2 hop, ... and one ending exactly at the last second."""
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1, got {window}, {hop}")
    if num_segments <= window:
        return [0]
    starts = list(range(0, num_segments - window + 1, hop))
    if starts[-1] != num_segments - window:
        starts.append(num_segments - window)
    return starts


def windowed_predict(model: nn.Module, audio: np.ndarray, visual: np.ndarray, window: int, hop: int,
                     device=None, progress: Callable[[int, int], None] | None = None, precision="auto"
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """(T, C) class probabilities and (T, k) attention (or None) for one video's features.

    audio (T, 128), visual (T, g, g, 512); windows as in `window_starts`, overlaps averaged;
    `progress(windows done, windows)` after every WINDOW_BATCH windows; `precision`: auto, fp32, bf16 or an
    avel.precision.Decision (avel localize passes its extractor's).
    """
    from avel.train.evaluate import predict

    t = len(audio)
    length = min(window, t)
    starts = window_starts(t, window, hop)
    parts = []
    for i in range(0, len(starts), WINDOW_BATCH):
        chunk = starts[i:i + WINDOW_BATCH]
        a = np.stack([audio[s:s + length] for s in chunk])  # (w, length, 128)
        v = np.stack([visual[s:s + length] for s in chunk])  # (w, length, g, g, 512)
        parts.append(predict(model, a, v, device=device, precision=precision))  # (w, length, C), (w, length, k) | None
        if progress is not None:
            progress(i + len(chunk), len(starts))
    probs = np.concatenate([p for p, _ in parts])
    attention = None if parts[0][1] is None else np.concatenate([att for _, att in parts])
    counts = np.zeros(t)
    p_sum = np.zeros((t, probs.shape[-1]))
    a_sum = None if attention is None else np.zeros((t, attention.shape[-1]))
    for w, s in enumerate(starts):
        counts[s:s + length] += 1
        p_sum[s:s + length] += probs[w]
        if a_sum is not None:
            a_sum[s:s + length] += attention[w]
    return p_sum / counts[:, None], (None if a_sum is None else a_sum / counts[:, None])
