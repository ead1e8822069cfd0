"""Per-second decisions and merged event spans: the content of events.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PROB_DECIMALS = 4  # rounding of probabilities in events.json


@dataclass(frozen=True)
class Event:
    """A run of consecutive seconds given the same event class (background is never an event)."""

    category: str
    class_index: int
    start: int  # s, first second of the event
    end: int  # s, one past the last second: the event covers [start, end)
    confidence: float  # mean probability of the class over the event's seconds


def merge_spans(classes: np.ndarray, probs: np.ndarray, names: list[str], background: int) -> list[Event]:
    """Consecutive seconds with the same non-background class -> one Event each."""
    events: list[Event] = []
    t = 0
    while t < len(classes):
        c = int(classes[t])
        end = t
        while end < len(classes) and classes[end] == c:
            end += 1
        if c != background:
            events.append(Event(names[c], c, t, end, round(float(probs[t:end, c].mean()), PROB_DECIMALS)))
        t = end
    return events


def events_document(probs: np.ndarray, names: list[str], background: int, **context) -> dict:
    """events.json: the class list, one entry per second (label and every class's probability), the events.

    `context` (video, model, extractor, windows, ...) is stored as given, before the results.
    """
    classes = probs.argmax(axis=1)
    seconds = [{"second": t, "start": float(t), "end": float(t + 1), "label": names[int(c)], "class": int(c),
                "probability": round(float(probs[t, c]), PROB_DECIMALS), "is_event": bool(c != background),
                "probabilities": [round(float(p), PROB_DECIMALS) for p in probs[t]]}
               for t, c in enumerate(classes)]
    events = [asdict(e) for e in merge_spans(classes, probs, names, background)]
    return {**context, "classes": names, "background": background, "seconds": seconds, "events": events}
