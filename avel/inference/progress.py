"""Progress of `avel localize`: one bar per stage of the current video (decode, features, model
windows, pictures: seconds or windows done, ETA) under one for the videos of a batch.

Bars come from avel.progress.stderr_progress: live on a terminal, plain lines otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from avel.progress import stderr_progress


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress | None]:
    """A stderr progress display for localize (None when disabled)."""
    if not enabled:
        yield None
        return
    with stderr_progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                         TextColumn("ETA"), TimeRemainingColumn()) as bar:
        yield bar


class Stages:
    """The stages of one video on a progress display (no-ops without one); tasks are removed on close."""

    def __init__(self, bar: Progress | None, label: str) -> None:
        self.bar, self.label = bar, label
        self.tasks: dict[str, object] = {}
        self.totals: dict[str, int | None] = {}

    def start(self, stage: str, total: int | None) -> None:
        if self.bar is not None:
            self.tasks[stage] = self.bar.add_task(f"{self.label} {stage}", total=total)
            self.totals[stage] = total

    def set(self, stage: str, done: int) -> None:
        """`done` units of `stage` finished (the total grows when the stated length was short)."""
        task = self.tasks.get(stage)
        if task is not None:
            total = self.totals[stage]
            if total is not None and done > total:
                self.totals[stage] = total = done
            self.bar.update(task, completed=done, total=total)

    def finish(self, stage: str, total: int | None = None) -> None:
        task = self.tasks.get(stage)
        if task is not None:
            n = total if total is not None else self.totals[stage]
            if n is not None:
                self.bar.update(task, total=n, completed=n)

    def close(self) -> None:
        if self.bar is not None:
            for task in self.tasks.values():
                self.bar.remove_task(task)
        self.tasks = {}

    def log(self, message: str) -> None:
        """Print a message without garbling the bars."""
        if self.bar is not None:
            self.bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            import sys

            print(message, file=sys.stderr)
