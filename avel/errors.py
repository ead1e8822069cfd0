"""User-facing errors: one line naming the file and the problem, non-zero exit."""

from __future__ import annotations

from pathlib import Path


class AvelError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits with 2."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


def reject_unknown_fields(cls: type, d: dict, what: str, path: str | Path | None = None) -> None:
    """Refuse a stored config (a dict for dataclass `cls`) with fields this avel does not know."""
    import dataclasses

    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise AvelError(f"{what} has unknown fields {sorted(unknown)} (from a newer avel?)", path)
