"""A rich progress bar for per-video work: done / total, videos/s, elapsed and ETA, on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from avel.progress import stderr_progress


class VideosPerSecondColumn(ProgressColumn):
    """Throughput over rich's recent-speed window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- videos/s" if speed is None else f"{speed:.2f} videos/s", style="progress.data.speed")


@contextmanager
def video_progress(total: int, done: int, description: str, enabled: bool = True
                   ) -> Iterator[tuple[Console, Callable[[], None]]]:
    """Yield (console for messages that must not garble the bar, advance-by-one callback)."""
    with stderr_progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), VideosPerSecondColumn(),
                         TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled) as bar:
        task = bar.add_task(description, total=total, completed=done)
        yield bar.console, lambda: bar.advance(task)
