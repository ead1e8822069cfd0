"""Sliding-window cross-modality localization (eq. 8) and its evaluation (Table 3).

A2V: the query is the audio of the ground-truth event span [s, s+l); every visual window
[t, t+l), t = 0..T-l, is scored by the summed distance sum_k D(V_{t+k}, A_{s+k}) and the argmin is
the predicted start. V2A swaps the modalities. A prediction counts only if it is exactly s.

Ties: the earliest start among equal minimum scores wins (numpy's argmin, as the authors'
cmm_test.py). Scores are summed in float64 so that the same distances always give the same sums.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avel.errors import AvelError

DIRECTIONS = ("A2V", "V2A")  # query modality -> searched modality


def window_scores(pair_dist: np.ndarray) -> np.ndarray:
    """Summed distances of every window position (eq. 8).

    pair_dist: (l, T), entry [k, t] = distance between query second k and search second t.
    Returns (T - l + 1,): score[t] = sum_k pair_dist[k, t + k].
    """
    pair_dist = np.asarray(pair_dist, dtype=np.float64)
    if pair_dist.ndim != 2:
        raise ValueError(f"pair distances must be (query length, video length), got shape {pair_dist.shape}")
    length, total = pair_dist.shape
    if length < 1:
        raise AvelError("empty query (length 0 s)")
    if length > total:
        raise AvelError(f"query of {length} s is longer than the {total}-s video")
    starts = np.arange(total - length + 1)[:, None] + np.arange(length)[None, :]  # (T-l+1, l)
    return pair_dist[np.arange(length)[None, :], starts].sum(axis=1)


def best_start(pair_dist: np.ndarray) -> int:
    """Predicted start (0-based) of the query: argmin of `window_scores`, earliest on ties."""
    return int(np.argmin(window_scores(pair_dist)))


def localize(dist: np.ndarray, start: int, length: int, direction: str) -> int:
    """Localize the span [start, start+length) of one modality in the other.

    dist: (T_v, T_a) distances of one video, dist[i, j] = D(V_i, A_j). A2V queries audio seconds
    and searches visual ones; V2A the reverse.
    """
    total = dist.shape[1] if direction == "A2V" else dist.shape[0]
    if length > total:
        raise AvelError(f"query of {length} s is longer than the {total}-s video")
    if start < 0 or start + length > total:
        raise AvelError(f"query span [{start}, {start + length}) lies outside the {total}-s video")
    queries = {"A2V": lambda: dist[:, start:start + length].T, "V2A": lambda: dist[start:start + length, :]}
    if direction not in queries:
        raise AvelError(f"unknown direction '{direction}'; valid: {', '.join(DIRECTIONS)}")
    return best_start(queries[direction]())  # (l, T) query-by-search distances


def event_span(mask: np.ndarray) -> tuple[int, int] | str:
    """(start, length) of the single contiguous event in a (T,) 0/1 mask, or the reason to skip it."""
    seconds = np.flatnonzero(np.asarray(mask) > 0.5)
    if len(seconds) == 0:
        return "no_event"
    if len(seconds) == len(mask):
        return "full_length"
    if seconds[-1] - seconds[0] + 1 != len(seconds):
        return "non_contiguous"
    return int(seconds[0]), len(seconds)


SKIP_REASONS = ("no_event", "full_length", "non_contiguous")


@dataclass
class VideoResult:
    """One evaluated video: its ground-truth span and both predicted starts (0-based seconds)."""

    row: int  # catalog row (Annotations.txt line index)
    start: int  # true start second of the event
    length: int  # event length l in seconds
    a2v: int  # predicted visual start for the audio query
    v2a: int  # predicted audio start for the visual query


@dataclass
class CrossModalResult:
    """Accuracies (percent) over the evaluated videos, plus what was skipped and why."""

    videos: list[VideoResult]
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    num_segments: int = 10  # T, the video length in seconds

    @property
    def evaluated(self) -> int:
        return len(self.videos)

    def accuracy(self, direction: str) -> float:
        if not self.videos:
            return float("nan")
        key = direction.lower()
        return 100.0 * float(np.mean([getattr(v, key) == v.start for v in self.videos]))

    @property
    def chance(self) -> float:
        """Accuracy (percent) of a uniformly random start: mean of 1 / (T - l + 1)."""
        if not self.videos:
            return float("nan")
        return 100.0 * float(np.mean([1.0 / (self.num_segments - v.length + 1) for v in self.videos]))

    def to_dict(self, per_video: bool = False) -> dict[str, Any]:
        """JSON-ready summary (percentages; None where nothing was evaluated)."""
        def pct(x: float) -> float | None:
            return None if np.isnan(x) else x

        out: dict[str, Any] = {
            "A2V": pct(self.accuracy("A2V")),
            "V2A": pct(self.accuracy("V2A")),
            "chance": pct(self.chance),
            "evaluated": self.evaluated,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped),
        }
        if per_video:
            out["videos"] = [vars(v).copy() for v in self.videos]
        return out


def evaluate_distances(dists: np.ndarray, event_mask: np.ndarray, rows: Iterable[int]) -> CrossModalResult:
    """Evaluate A2V and V2A from precomputed distance matrices.

    dists: (N, T, T) with dists[n, i, j] = D(V_i, A_j) of video n; event_mask: (N, T); rows: (N,)
    catalog rows. Videos without an event, with a full-length event (no room to slide) or with a
    non-contiguous mask are skipped and counted by reason.
    """
    dists = np.asarray(dists)
    event_mask = np.asarray(event_mask)
    rows = list(rows)
    if dists.ndim != 3 or dists.shape[1] != dists.shape[2] or dists.shape[:2] != event_mask.shape:
        raise ValueError(f"need dists (N, T, T) and event_mask (N, T), got {dists.shape} and {event_mask.shape}")
    result = CrossModalResult(videos=[], num_segments=event_mask.shape[1])
    for n, row in enumerate(rows):
        span = event_span(event_mask[n])
        if isinstance(span, str):
            result.skipped[span] += 1
            continue
        start, length = span
        result.videos.append(VideoResult(
            row=int(row), start=start, length=length,
            a2v=localize(dists[n], start, length, "A2V"), v2a=localize(dists[n], start, length, "V2A")))
    return result
