"""A resumable runner for the reproduction's training jobs (one job = one cell x one seed).

Each finished job leaves a small record (`<runs>/<cell>/seed<k>.json`, written atomically) beside its
run directory (`<runs>/<cell>/seed<k>/`). A later invocation reuses a record whose fingerprint
(model config, training config with seed, data fingerprint) matches, and re-runs a job whose record
is missing or stale, clearing its half-written run directory first. So an interrupted reproduction
continues where it stopped, and changing a setting re-trains exactly the cells it affects.

Progress: one rich bar over all jobs, naming the cell being trained, with an ETA for the whole
table estimated from measured job times (the same cell's earlier seeds when known, else the mean).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
from rich.progress import TimeElapsedColumn
from rich.text import Text

from avel.io import write_json


@dataclass
class Job:
    """One unit of resumable work."""

    group: str  # what the record belongs to (a cell key, or "table3")
    seed: int
    label: str  # shown in the progress display
    run_dir: Path  # where the work writes its files
    fingerprint: dict[str, Any]  # everything the result depends on; a mismatch means re-run
    execute: Callable[[Path], dict[str, Any]]  # run_dir -> record (measured values)
    resumes: bool = False  # the work resumes its own interrupted run_dir (else it is cleared first)
    status: Callable[[Path], str] | None = None  # run_dir -> a short live status ("epoch 3, val 61.2%")

    @property
    def record_path(self) -> Path:
        return self.run_dir.with_suffix(".json")


@dataclass
class RunStats:
    trained: int = 0  # jobs executed by this invocation
    reused: int = 0  # jobs whose record was reused
    seconds: float = 0.0  # time spent executing jobs
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # group -> records


def load_record(job: Job) -> dict[str, Any] | None:
    """The job's record if it exists, parses and matches the job's fingerprint; else None."""
    try:
        rec = json.loads(job.record_path.read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("fingerprint") == _jsonable(job.fingerprint) else None


def _jsonable(obj: Any) -> Any:
    """The object as it reads back from JSON (tuples become lists), for fingerprint comparison."""
    return json.loads(json.dumps(obj))


class _Eta:
    """ETA of the remaining jobs from measured job times."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.pending: list[Job] = []
        self.current_start: float | None = None

    def add(self, group: str, seconds: float | None) -> None:
        if seconds is not None:
            self.times.setdefault(group, []).append(float(seconds))

    def estimate(self, job: Job) -> float | None:
        own = self.times.get(job.group)
        every = [t for ts in self.times.values() for t in ts]
        if own:
            return sum(own) / len(own)
        return sum(every) / len(every) if every else None

    def remaining(self) -> float | None:
        ests = [self.estimate(j) for j in self.pending]
        if not self.pending:
            return 0.0
        if any(e is None for e in ests):
            return None
        left = sum(ests)
        if self.current_start is not None:
            left -= min(time.monotonic() - self.current_start, ests[0])
        return max(left, 0.0)


class EtaColumn(ProgressColumn):
    """'ETA h:mm:ss' of the whole table (or 'ETA ?' before any job time is known)."""

    def __init__(self, eta: _Eta) -> None:
        super().__init__()
        self.eta = eta

    def render(self, task) -> Text:  # noqa: ANN001 (rich's Task)
        left = self.eta.remaining()
        if left is None:
            return Text("ETA ?", style="progress.remaining")
        m, s = divmod(int(left + 0.5), 60)
        h, m = divmod(m, 60)
        return Text(f"ETA {h}:{m:02d}:{s:02d}", style="progress.remaining")


class StatusColumn(ProgressColumn):
    """The running job's own status line (polled at most once per STATUS_POLL_S seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.job: Job | None = None
        self._text, self._at = "", 0.0

    def render(self, task) -> Text:  # noqa: ANN001 (rich's Task)
        if self.job is None or self.job.status is None:
            return Text("")
        now = time.monotonic()
        if now - self._at >= STATUS_POLL_S:
            self._at = now
            try:
                self._text = self.job.status(self.job.run_dir)
            except (OSError, ValueError, KeyError):
                pass  # a file being replaced: keep the last status
        return Text(self._text, style="progress.data.speed")


STATUS_POLL_S = 1.0  # seconds between polls of the running job's status


def run_jobs(jobs: Sequence[Job], *, progress: bool = True, console: Console | None = None) -> RunStats:
    """Run (or reuse) every job in order; return their records grouped by `job.group`."""
    stats = RunStats()
    eta = _Eta()
    todo: list[Job] = []
    for job in jobs:
        rec = load_record(job)
        if rec is None:
            todo.append(job)
        else:
            stats.reused += 1
            stats.records.setdefault(job.group, []).append(rec)
            eta.add(job.group, rec.get("seconds"))
    eta.pending = list(todo)
    status = StatusColumn()
    columns = [SpinnerColumn(), TextColumn("{task.description}"), status, BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), EtaColumn(eta)]
    console = console or Console(stderr=True)
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("reproduce", total=len(jobs), completed=stats.reused)
        for job in todo:
            bar.update(task, description=f"training {job.label}")
            eta.current_start = time.monotonic()
            status.job, status._text = job, ""
            rec = execute_job(job)
            eta.current_start, status.job = None, None
            eta.pending.pop(0)
            eta.add(job.group, rec["seconds"])
            stats.trained += 1
            stats.seconds += rec["seconds"]
            stats.records.setdefault(job.group, []).append(rec)
            bar.update(task, advance=1)
        bar.update(task, description="done")
    return stats


def execute_job(job: Job) -> dict[str, Any]:
    """Run one job from a clean run directory and write its record atomically."""
    if job.run_dir.exists() and not (job.resumes and _fingerprint_file(job).is_file()
                                     and json.loads(_fingerprint_file(job).read_text()) == _jsonable(job.fingerprint)):
        shutil.rmtree(job.run_dir)  # half-written or stale: start over
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    if job.resumes:
        write_json(_fingerprint_file(job), job.fingerprint)  # lets a resumed run check it is the same job
    t0 = time.perf_counter()
    rec = dict(job.execute(job.run_dir))
    rec.update(seed=job.seed, seconds=time.perf_counter() - t0, fingerprint=_jsonable(job.fingerprint))
    write_json(job.record_path, rec)
    return rec


def _fingerprint_file(job: Job) -> Path:
    """Beside the run directory (the trainer refuses a non-empty directory that holds no run)."""
    return job.run_dir.with_suffix(".job.json")
