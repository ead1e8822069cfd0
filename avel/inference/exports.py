"""Event lists in the formats other tools read, written beside events.json.

events.csv      one row per event: category, start, end, duration (s, half-open [start, end)), confidence
seconds.csv     one row per second: second, start, end, label, probability, is_event, then every class's probability
events.vtt      WebVTT subtitles (HH:MM:SS.mmm), one cue per event: "category (confidence)"
events.srt      SubRip subtitles (HH:MM:SS,mmm), numbered cues, same text
labels.txt      Audacity label track: start<TAB>end<TAB>label, seconds with 6 decimals (File > Import > Labels)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

EXPORTS = {"csv": "events.csv", "seconds_csv": "seconds.csv", "vtt": "events.vtt", "srt": "events.srt",
           "audacity": "labels.txt"}


def timestamp(seconds: float, decimal: str) -> str:
    """HH:MM:SS<decimal>mmm (SRT uses ',', WebVTT '.')."""
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{decimal}{ms % 1000:03d}"


def cue_text(e: dict) -> str:
    return f"{e['category']} ({e['confidence']:.2f})"


def events_csv(doc: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["category", "class_index", "start", "end", "duration", "confidence"])
    for e in doc["events"]:
        w.writerow([e["category"], e["class_index"], e["start"], e["end"], e["end"] - e["start"], e["confidence"]])
    return buf.getvalue()


def seconds_csv(doc: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["second", "start", "end", "label", "probability", "is_event", *doc["classes"]])
    for s in doc["seconds"]:
        w.writerow([s["second"], s["start"], s["end"], s["label"], s["probability"], int(s["is_event"]),
                    *s["probabilities"]])
    return buf.getvalue()


def webvtt(doc: dict) -> str:
    cues = [f"{timestamp(e['start'], '.')} --> {timestamp(e['end'], '.')}\n{cue_text(e)}\n" for e in doc["events"]]
    return "\n".join(["WEBVTT\n", *cues])


def srt(doc: dict) -> str:
    cues = [f"{i}\n{timestamp(e['start'], ',')} --> {timestamp(e['end'], ',')}\n{cue_text(e)}\n"
            for i, e in enumerate(doc["events"], 1)]
    return "\n".join(cues)


def audacity_labels(doc: dict) -> str:
    return "".join(f"{e['start']:.6f}\t{e['end']:.6f}\t{e['category']}\n" for e in doc["events"])


WRITERS: dict[str, Callable[[dict], str]] = {"csv": events_csv, "seconds_csv": seconds_csv, "vtt": webvtt,
                                             "srt": srt, "audacity": audacity_labels}


def write_exports(out_dir: Path, doc: dict) -> list[Path]:
    """Every format of EXPORTS into out_dir (atomically); returns the paths written."""
    from avel.io import write_text

    paths = []
    for key, make in WRITERS.items():
        path = Path(out_dir) / EXPORTS[key]
        write_text(path, make(doc))
        paths.append(path)
    return paths
