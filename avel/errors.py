"""User-facing errors: one line naming the file and the problem, non-zero exit."""

from __future__ import annotations

from pathlib import Path


class AvelError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits with 2."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)
