"""`avel localize` over many videos: files, folders and list files in; one output folder per video
(named after the video's stem, de-duplicated) plus summary.json; the model is loaded once.

A video that fails is reported in one line and the others still run. A video whose folder already
holds complete outputs made with the same video file, model and settings is skipped, so an
interrupted batch resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from avel.errors import AvelError
from avel.features.extract import VIDEO_SUFFIXES, plain_reason
from avel.inference.events import SPAN_CONVENTION

LIST_SUFFIXES = frozenset({".txt", ".list", ".lst"})  # a file with one of these suffixes lists videos, one a line
SUMMARY_FILE = "summary.json"
TABLE_EVENTS = 3  # events shown per video in the printed table (all are in summary.json)


def expand_inputs(specs: Iterable[str | Path]) -> list[Path]:
    """Video files from files, folders (their video files by suffix, sorted) and list files (one path a
    line, relative to the list; '#' comments). The same file given twice is kept once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for spec in map(Path, specs):
        if spec.is_dir():
            found = sorted(p for p in spec.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise AvelError(f"no video files (suffixes: {', '.join(sorted(VIDEO_SUFFIXES))})", spec)
        elif spec.suffix.lower() in LIST_SUFFIXES:
            if not spec.is_file():
                raise AvelError("list file not found", spec)
            lines = [ln.strip() for ln in spec.read_text(encoding="utf-8-sig").splitlines()]
            found = [p if p.is_absolute() else spec.parent / p
                     for p in (Path(ln) for ln in lines if ln and not ln.startswith("#"))]
            if not found:
                raise AvelError("the list names no video", spec)
        else:
            found = [spec]  # a video (a missing or unreadable one fails on its own, in its turn)
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def output_names(videos: list[Path]) -> list[str]:
    """One folder name per video: its stem, with -2, -3, ... for later videos of the same stem."""
    used: set[str] = set()
    names = []
    for v in videos:
        name, k = v.stem or "video", 2
        while name.lower() in used:
            name, k = f"{v.stem}-{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names


def summary_row(video: Path, out: Path, result: dict | None, error: AvelError | None) -> dict:
    if error is not None:
        return {"video": str(video), "output": str(out), "status": "failed", "error": plain_reason(error)}
    return {"video": str(video), "output": str(out), "status": result["status"],
            "duration": result["video"]["duration"], "num_segments": result["video"]["num_segments"],
            "events": [{"category": e["category"], "start": e["start"], "end": e["end"],
                        "confidence": e["confidence"], "span": e["span"]} for e in result["events"]],
            "warnings": result.get("warnings", [])}


def localize_many(loc, videos: list[Path], out_root: str | Path, options, bar=None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Localize every video into out_root/NAME/; write and return out_root/summary.json's content.

    The caller holds out_root's lock. `bar`: a progress display (avel.inference.progress.progress_bar).
    """
    from avel.io import write_json
    from avel.inference.pipeline import localize_with, stderr_log
    from avel.inference.progress import Stages

    out_root = Path(out_root)
    rows = []
    task = bar.add_task("videos", total=len(videos)) if bar is not None else None
    for video, name in zip(videos, output_names(videos)):
        stages = Stages(bar, video.name)
        say = (lambda m: stages.log(f"avel: {m}")) if bar is not None else (log or stderr_log)  # noqa: E731
        out = out_root / name
        try:
            result = localize_with(loc, video, out, options, stages=stages, log=say)
            rows.append(summary_row(video, out, result, None))
        except AvelError as exc:
            stages.close()
            msg = str(exc) if exc.path is not None else f"{video}: {exc}"
            say(f"error: {msg} (the other videos continue)")
            rows.append(summary_row(video, out, None, exc))
        if task is not None:
            bar.advance(task)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    summary = {"model": {"run": str(loc.run_dir), "name": loc.model_name,
                         "trained_on_synthetic": loc.synthetic},
               "span_convention": SPAN_CONVENTION, "counts": counts, "videos": rows,
               "warnings": list(loc.warnings)}
    write_json(out_root / SUMMARY_FILE, summary)
    return summary


def summary_table(summary: dict) -> str:
    """The printed table: one line per video (status, length, events or the error)."""
    rows = [("video", "status", "length", "events")]
    for r in summary["videos"]:
        if r["status"] == "failed":
            rows.append((Path(r["video"]).name, "failed", "-", r["error"]))
            continue
        ev = r["events"]
        text = "none" if not ev else "; ".join(f"{e['category']} {e['span']}" for e in ev[:TABLE_EVENTS])
        if len(ev) > TABLE_EVENTS:
            text += f"; ... ({len(ev)} events)"
        rows.append((Path(r["video"]).name, r["status"], f"{r['duration']:.1f} s", text))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    c = summary["counts"]
    lines.append(f"{c['done']} done, {c['skipped']} skipped (already complete), {c['failed']} failed")
    return "\n".join(lines)



def single_video(specs: list[str | Path]) -> bool:
    """One argument that is neither a folder nor a list file: outputs go straight into --out."""
    return len(specs) == 1 and not Path(specs[0]).is_dir() and Path(specs[0]).suffix.lower() not in LIST_SUFFIXES


def localize_paths(specs: list[str | Path], run_dir: str | Path, out_root: str | Path, cfg, options,
                   progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Expand `specs`, load the model once, localize each video into out_root/NAME/ (holding out_root's
    lock) and return the summary (also out_root/summary.json)."""
    from avel.io import output_lock
    from avel.inference.pipeline import load_localizer
    from avel.inference.progress import progress_bar

    options.validate()
    videos = expand_inputs(specs)
    loc = load_localizer(run_dir, cfg, options.window, options.hop, log=log)
    with output_lock(out_root), progress_bar(progress) as bar:
        return localize_many(loc, videos, out_root, options, bar=bar, log=log)
