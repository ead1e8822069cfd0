"""Progress bars for long work: rich, always on stderr, so stdout stays clean for results and --json."""

from __future__ import annotations

from typing import Any


def stderr_progress(*columns: Any, **kwargs: Any):
    """`rich.progress.Progress(*columns, **kwargs)` drawing on stderr."""
    from rich.console import Console
    from rich.progress import Progress

    return Progress(*columns, console=Console(stderr=True), **kwargs)
