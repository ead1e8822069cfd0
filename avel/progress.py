"""Progress for long work, always on stderr so stdout stays clean for results and --json.

On a terminal: rich's live bars. Anywhere else (a log file, a pipe, CI): the same rich Progress
API, but nothing is redrawn; instead each task prints a plain line (done / total, rate-based ETA)
at most every PLAIN_INTERVAL_S seconds and once when it completes, so a log shows where long work
stands without carriage-return noise.
"""

from __future__ import annotations

import time
from typing import Any

from rich.progress import Progress, TaskID

PLAIN_INTERVAL_S = 10.0  # seconds between two plain progress lines of one task (stderr not a terminal)


def clock(seconds: float | None) -> str:
    """H:MM:SS, or -:--:-- when unknown."""
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class PlainProgress(Progress):
    """rich Progress that prints plain lines instead of drawing bars (for a stderr that is not a terminal)."""

    def __init__(self, *columns: Any, interval_s: float = PLAIN_INTERVAL_S, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.interval_s = interval_s
        self._printed: dict[TaskID, float] = {}  # task -> time of its last line (task creation at first)
        self._finished: set[TaskID] = set()

    def start(self) -> None:  # no live display: lines only
        pass

    def stop(self) -> None:
        pass

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task = super().add_task(description, *args, **kwargs)
        self._printed[task] = time.monotonic()
        return task

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def line(self, task_id: TaskID) -> str:
        """'description: done/total (pct%), elapsed H:MM:SS, ETA H:MM:SS[, info]'."""
        with self._lock:
            task = self._tasks[task_id]
            done, total = task.completed, task.total
            count = f"{done:g}/{total:g} ({100 * done / total:.0f}%)" if total else f"{done:g}"
            eta = "done" if task.finished else f"ETA {clock(task.time_remaining)}"
            info = task.fields.get("info")
            return (f"{task.description}: {count}, elapsed {clock(task.elapsed or 0.0)}, {eta}"
                    + (f", {info}" if info else ""))

    def _report(self, task_id: TaskID) -> None:
        if self.disable or task_id not in self._tasks:
            return
        task = self._tasks[task_id]
        now = time.monotonic()
        if task.finished:
            if task_id in self._finished:
                return
            self._finished.add(task_id)
        elif now - self._printed.get(task_id, now) < self.interval_s:
            return
        else:
            self._finished.discard(task_id)
        self._printed[task_id] = now
        self.console.print(self.line(task_id), markup=False, highlight=False, soft_wrap=True)


def stderr_progress(*columns: Any, **kwargs: Any) -> Progress:
    """`rich.progress.Progress(*columns, **kwargs)` on stderr: live bars on a terminal, plain lines otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    cls = Progress if console.is_terminal else PlainProgress
    return cls(*columns, console=console, **kwargs)
