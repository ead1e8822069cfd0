"""Per-second decisions and merged event spans: the content of events.json.

Spans are half-open intervals of whole seconds from the video's start: an event with start 3 and
end 7 covers [3 s, 7 s), that is seconds 3, 4, 5 and 6, and lasts 4 s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PROB_DECIMALS = 4  # rounding of probabilities in events.json
SPAN_CONVENTION = ("half-open [start, end) in seconds from the video's start: an event with start 3 and end 7 "
                   "covers seconds 3, 4, 5 and 6 (4 s)")
DEFAULT_THRESHOLD = 0.0  # minimum probability of the event class for a second to count (0: the most probable class wins)
DEFAULT_MIN_DURATION = 0.0  # s: shorter events are dropped (0: keep every event)


@dataclass(frozen=True)
class Event:
    """A run of consecutive seconds given the same event class (background is never an event)."""

    category: str
    class_index: int
    start: int  # s, first second of the event
    end: int  # s, one past the last second: the event covers [start, end)
    confidence: float  # mean probability of the class over the event's seconds

    @property
    def duration(self) -> int:
        return self.end - self.start


def clock(seconds: float) -> str:
    """MM:SS, or H:MM:SS from one hour on."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def span_text(start: int, end: int) -> str:
    """'00:03-00:07 (4 s, seconds 3..6 inclusive)' for the half-open span [start, end)."""
    last = end - 1
    seconds = f"second {start}" if last == start else f"seconds {start}..{last} inclusive"
    return f"{clock(start)}-{clock(end)} ({end - start} s, {seconds})"


def merge_spans(classes: np.ndarray, probs: np.ndarray, names: list[str], background: int,
                threshold: float = DEFAULT_THRESHOLD, min_duration: float = DEFAULT_MIN_DURATION) -> list[Event]:
    """Consecutive seconds with the same non-background class -> one Event each.

    A second counts only when its class's probability is >= `threshold`; events shorter than
    `min_duration` seconds are dropped.
    """
    counts = [int(c) != background and probs[t, int(c)] >= threshold for t, c in enumerate(classes)]
    events: list[Event] = []
    t = 0
    while t < len(classes):
        c = int(classes[t])
        end = t + 1
        while end < len(classes) and classes[end] == c and counts[end] == counts[t]:
            end += 1
        if counts[t] and end - t >= min_duration:
            events.append(Event(names[c], c, t, end, round(float(probs[t:end, c].mean()), PROB_DECIMALS)))
        t = end
    return events


def event_record(e: Event) -> dict:
    """One entry of events.json's `events`: the Event's fields, its length and its span in words."""
    return {**asdict(e), "duration": e.duration, "span": span_text(e.start, e.end)}


def events_document(probs: np.ndarray, names: list[str], background: int, threshold: float = DEFAULT_THRESHOLD,
                    min_duration: float = DEFAULT_MIN_DURATION, **context) -> dict:
    """events.json: the class list, one entry per second (label and every class's probability), the events.

    `label` is each second's most probable class; `is_event` says whether the second belongs to a
    reported event (after `threshold` and `min_duration`). `context` (video, model, extractor,
    windows, ...) is stored as given, before the results.
    """
    classes = probs.argmax(axis=1)
    events = merge_spans(classes, probs, names, background, threshold, min_duration)
    in_event = np.zeros(len(classes), bool)
    for e in events:
        in_event[e.start:e.end] = True
    seconds = [{"second": t, "start": float(t), "end": float(t + 1), "label": names[int(c)], "class": int(c),
                "probability": round(float(probs[t, c]), PROB_DECIMALS), "is_event": bool(in_event[t]),
                "probabilities": [round(float(p), PROB_DECIMALS) for p in probs[t]]}
               for t, c in enumerate(classes)]
    return {**context, "classes": names, "background": background, "span_convention": SPAN_CONVENTION,
            "merging": {"threshold": threshold, "min_duration": min_duration},
            "seconds": seconds, "events": [event_record(e) for e in events]}
