"""Training pairs of 1-s audio and visual segments for AVDLN and DCCA.

A pair is (video n, audio second a, visual second v, label y). y = 1: synchronized seconds inside
the event (a = v, event second). y = 0 comes from two sources, both on by default:
- shifted: the audio (or, with equal probability, the visual) second of a positive pair is moved
  to another second of the same video. These teach exactly what the sliding window must tell
  apart: the event's audio against the same video's visual content at other times. By default
  the new second is a background second (`into_background`), so a negative always pairs event
  content with non-event content; moving to any other second would also pair two event seconds
  of the same video, whose content is often the same sound and sight, as "mismatched" (label
  noise; it did not help on AVE-Synth, see docs/crossmodal.md). Videos whose event fills all T
  seconds then give no shifted negatives.
- background: synchronized seconds outside the event, the negatives of the authors' cmm_train.py
  (its labels are labels_closs: 1 on event seconds, 0 on background seconds, all pairs synchronized).
DCCA trains on the positives only (it needs corresponding samples, not labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pairs:
    """Pair index arrays, all (P,)."""

    video: np.ndarray  # row into the split's feature arrays
    audio_t: np.ndarray  # audio second 0..T-1
    visual_t: np.ndarray  # visual second 0..T-1
    same: np.ndarray  # 1.0 synchronized event pair, 0.0 mismatched or background pair

    def __len__(self) -> int:
        return len(self.video)

    def take(self, idx: np.ndarray) -> "Pairs":
        return Pairs(self.video[idx], self.audio_t[idx], self.visual_t[idx], self.same[idx])


def positive_pairs(event_mask: np.ndarray) -> Pairs:
    """All synchronized event seconds of (N, T) masks."""
    n, t = np.nonzero(np.asarray(event_mask) > 0.5)
    return Pairs(n.astype(np.int64), t.astype(np.int64), t.astype(np.int64), np.ones(len(n), np.float32))


def sample_pairs(event_mask: np.ndarray, rng: np.random.Generator, shifted_per_positive: int = 1,
                 background: bool = True, into_background: bool = True) -> Pairs:
    """One epoch of contrastive pairs from (N, T) event masks, in shuffled order.

    Each positive gets `shifted_per_positive` shifted negatives: the audio or the visual second
    (coin flip) is replaced by a uniformly drawn other second of the same video, a background
    second when `into_background` (positives of full-length events then get none).
    """
    mask = np.asarray(event_mask) > 0.5
    total = mask.shape[1]
    pos = positive_pairs(mask)
    parts = [pos]
    if shifted_per_positive > 0 and total > 1:
        base = pos.take(np.repeat(np.arange(len(pos)), shifted_per_positive))
        if into_background:
            n_bg = (~mask).sum(axis=1)[base.video]  # (P,) background seconds of each pair's video
            base = base.take(np.flatnonzero(n_bg > 0))
            n_bg = n_bg[n_bg > 0]
            bg_first = np.argsort(mask, axis=1, kind="stable")  # (N, T): background seconds first, in time order
            moved = bg_first[base.video, rng.integers(0, n_bg)]
        else:
            moved = (base.audio_t + rng.integers(1, total, size=len(base))) % total
        shift_audio = rng.random(len(base)) < 0.5
        parts.append(Pairs(base.video, np.where(shift_audio, moved, base.audio_t),
                           np.where(shift_audio, base.visual_t, moved), np.zeros(len(base), np.float32)))
    if background:
        n, t = np.nonzero(~mask)
        parts.append(Pairs(n.astype(np.int64), t.astype(np.int64), t.astype(np.int64), np.zeros(len(n), np.float32)))
    pairs = Pairs(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("video", "audio_t", "visual_t", "same")))
    return pairs.take(rng.permutation(len(pairs)))
