"""A resumable runner for the reproduction's training jobs (one job = one cell x one seed).

Each finished job leaves a small record (`<runs>/<cell>/seed<k>.json`, written atomically) beside its
run directory (`<runs>/<cell>/seed<k>/`). A later invocation reuses a record whose fingerprint
(model config, training config with seed, data fingerprint) matches, and re-runs a job whose record
is missing or stale, clearing its half-written run directory first. So an interrupted reproduction
continues where it stopped, and changing a setting re-trains exactly the cells it affects.

Jobs run one after another, or in `workers` forked processes (on 2 CPU cores, two single-threaded
training runs side by side finish sooner than one run on two threads: the models are small and
their LSTMs do not parallelise well).

Progress: one rich bar over all jobs, naming the cells being trained with their live status, with
an ETA for the whole table estimated from measured job times (the same cell's earlier seeds when
known, else the mean), divided among the workers.
"""

from __future__ import annotations

import json
import os
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
    """ETA of the remaining jobs from measured job times, shared by `workers` parallel workers."""

    def __init__(self, workers: int = 1) -> None:
        self.times: dict[str, list[float]] = {}
        self.pending: list[Job] = []  # not finished (running ones included)
        self.started: dict[int, float] = {}  # id(job) -> monotonic start time of running jobs
        self.workers = max(1, workers)

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
        """Seconds of work left divided among the workers; None before any job time is known."""
        if not self.pending:
            return 0.0
        ests = [self.estimate(j) for j in self.pending]
        if any(e is None for e in ests):
            return None
        now = time.monotonic()
        left = sum(e - min(now - self.started[id(j)], e) if id(j) in self.started else e
                   for j, e in zip(self.pending, ests))
        return max(left, 0.0) / min(self.workers, len(self.pending))


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
    """The running jobs' own status lines (polled at most once per STATUS_POLL_S seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.running: list[Job] = []
        self._text: dict[int, str] = {}
        self._at = 0.0

    def render(self, task) -> Text:  # noqa: ANN001 (rich's Task)
        now = time.monotonic()
        if now - self._at >= STATUS_POLL_S:
            self._at = now
            for job in self.running:
                if job.status is not None:
                    try:
                        self._text[id(job)] = job.status(job.run_dir)
                    except (OSError, ValueError, KeyError):
                        pass  # a file being replaced: keep the last status
        parts = [f"{j.label}: {self._text[id(j)]}" if self._text.get(id(j)) else j.label for j in self.running]
        return Text("; ".join(parts), style="progress.data.speed")


STATUS_POLL_S = 1.0  # seconds between polls of the running jobs' status
RESULT_POLL_S = 0.25  # seconds between checks for finished parallel jobs

# Jobs of the current parallel run, inherited by the forked workers (closures cannot be pickled).
_FORK_JOBS: list[Job] = []
_FORK_STARTS: Any = None  # multiprocessing queue of (index, start time) sent by workers


def _fork_worker_indexed(index: int) -> tuple[int, dict[str, Any]]:
    """Worker side: announce the start, run the job, return its record (plain data, picklable)."""
    _FORK_STARTS.put((index, time.monotonic()))
    return index, execute_job(_FORK_JOBS[index])


def run_jobs(jobs: Sequence[Job], *, progress: bool = True, console: Console | None = None,
             workers: int = 1) -> RunStats:
    """Run (or reuse) every job; return their records grouped by `job.group`.

    workers > 1 runs jobs in that many forked processes (each job's work should then be
    single-threaded); the pool is created before the progress display starts its thread.
    """
    stats = RunStats()
    todo: list[Job] = []
    eta = _Eta(workers)
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
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
               TimeElapsedColumn(), EtaColumn(eta), status]

    def finished(job: Job, rec: dict[str, Any]) -> None:
        eta.pending.remove(job)
        eta.started.pop(id(job), None)
        if job in status.running:
            status.running.remove(job)
        eta.add(job.group, rec["seconds"])
        stats.trained += 1
        stats.seconds += rec["seconds"]
        stats.records.setdefault(job.group, []).append(rec)

    pool = _fork_pool(todo, min(workers, len(todo))) if workers > 1 and len(todo) > 1 else None
    console = console or Console(stderr=True)
    try:
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task("training", total=len(jobs), completed=stats.reused)
            if pool is None:
                for job in todo:
                    eta.started[id(job)] = time.monotonic()
                    status.running = [job]
                    finished(job, execute_job(job))
                    bar.update(task, advance=1)
            else:
                _run_parallel(pool, todo, eta, status, finished, lambda: bar.update(task, advance=1))
            bar.update(task, description="done")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return stats


def _fork_pool(todo: list[Job], n: int):
    """A pool of n forked workers that inherit `todo` (closures and the open dataset come along)."""
    import multiprocessing as mp

    global _FORK_JOBS, _FORK_STARTS
    ctx = mp.get_context("fork")
    _FORK_JOBS, _FORK_STARTS = list(todo), ctx.SimpleQueue()  # set before the fork: workers copy them
    return ctx.Pool(n, initializer=_init_worker, initargs=(os.getpid(),))


def _init_worker(parent_pid: int) -> None:
    """Pool workers share the cores: one torch thread each (also avoids OpenMP's fork troubles). They
    die with their parent and leave Ctrl-C to it (it terminates the pool), so a killed or interrupted
    reproduction leaves no orphan training runs and no worker tracebacks."""
    import signal
    import sys

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


PR_SET_PDEATHSIG = 1  # linux/prctl.h: signal delivered to this process when its parent thread exits


def die_with_parent(parent_pid: int) -> None:
    """In a forked child: receive SIGTERM when the parent dies (Linux prctl), and exit now if it already has."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the parent-pid check below still catches a parent gone before this point
    if os.getppid() != parent_pid:  # the parent died between fork and prctl
        os._exit(1)


def _run_parallel(pool: Any, todo: list[Job], eta: _Eta, status: StatusColumn,
                  finished: Callable[[Job, dict], None], advance: Callable[[], None]) -> None:
    """Hand every job to the pool; follow their starts and results until all are done."""
    import multiprocessing as mp

    results = pool.imap_unordered(_fork_worker_indexed, range(len(todo)))
    done = 0
    while done < len(todo):
        while not _FORK_STARTS.empty():
            i, t0 = _FORK_STARTS.get()
            eta.started[id(todo[i])] = t0
            status.running.append(todo[i])
        try:
            i, rec = results.next(timeout=RESULT_POLL_S)
        except mp.TimeoutError:
            continue
        finished(todo[i], rec)
        advance()
        done += 1


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
