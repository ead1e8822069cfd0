"""User-facing errors: one line naming the file and the problem, non-zero exit."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_MESSAGE_CHARS = 300  # an error message longer than this (e.g. quoting file content) is cut at a word boundary
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one printable line: control characters escaped (\\n, \\x00), at most `limit` characters,
    cut at a word boundary (never inside a word or an escape) with a note of how much was left out."""
    text = str(text)
    pieces, used = [], 0
    for ch in text:
        piece = ch.encode("unicode_escape").decode("ascii") if _CONTROL.match(ch) else ch
        if used + len(piece) > limit:
            break
        pieces.append(piece)
        used += len(piece)
    else:
        return "".join(pieces)
    space = max((i for i in range(len(pieces) // 2, len(pieces)) if pieces[i] == " "), default=None)
    keep = pieces[:space] if space is not None else pieces
    return f"{''.join(keep).rstrip()} ... [{len(text) - len(keep)} more characters]"


class AvelError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits with 2.

    The message is bounded (`bounded`): control characters escaped, long quotes of file content cut."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = bounded(message)
        where = bounded(str(self.path), 2 * MAX_MESSAGE_CHARS) if self.path is not None else None
        super().__init__(f"{where}: {self.problem}" if where is not None else self.problem)


def reject_unknown_fields(cls: type, d: dict, what: str, path: str | Path | None = None) -> None:
    """Refuse a stored config (a dict for dataclass `cls`) with fields this avel does not know."""
    import dataclasses

    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise AvelError(f"{what} has unknown fields {sorted(unknown)} (from a newer avel?)", path)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _conform(value: Any, tp: Any) -> tuple[bool, Any]:
    """(value matches annotation `tp`, the value converted for the dataclass: JSON lists -> tuples)."""
    import math
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, v = _conform(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is typing.Literal:
        return value in args, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        elem = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(elem) != len(value):
            return False, value
        out = [_conform(v, t) for v, t in zip(value, elem)]
        return all(ok for ok, _ in out), tuple(v for _, v in out)
    if origin is list or tp is list:
        return isinstance(value, list), value
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def dataclass_from_dict(cls: type, d: Any, what: str, path: str | Path | None = None) -> Any:
    """Build config dataclass `cls` from a stored dict, checking every field against its annotation.

    A value of the wrong type (a string for an int, 12.5 for an int, null for a non-optional field,
    a list instead of an object) is one AvelError naming the file and field; so are unknown fields.
    Fields missing from `d` take their defaults (files written before the field existed). When
    `cls` has a `validate()` method, it then checks ranges; its errors are re-raised naming `path`.
    """
    import dataclasses
    import typing

    if not isinstance(d, Mapping):
        raise AvelError(f"{what} must be a JSON object, got {type(d).__name__}", path)
    reject_unknown_fields(cls, d, what, path)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise AvelError(f"{what} lacks the required field '{f.name}'", path)
            continue
        ok, value = _conform(d[f.name], hints[f.name])
        if not ok:
            raise AvelError(f"{what}: field '{f.name}' must be {_type_name(hints[f.name])}, "
                            f"got {bounded(repr(d[f.name]), 60)}", path)
        kwargs[f.name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except AvelError as exc:
            raise AvelError(exc.problem, path or exc.path) from None
    return obj


def require_field(doc: Any, key: str, path: str | Path | None = None) -> Any:
    """`doc[key]` of a stored JSON document, or one AvelError naming the file when it is missing."""
    if not isinstance(doc, Mapping):
        raise AvelError(f"must be a JSON object, got {type(doc).__name__}", path)
    if key not in doc:
        raise AvelError(f"lacks the '{key}' entry (damaged or not written by avel?)", path)
    return doc[key]


def require_finite_weights(tensors: Mapping[str, Any], path: str | Path | None = None) -> None:
    """Refuse weights holding NaN or infinite values (every weight loader calls this): such a network
    turns every input into NaN features or scores, silently."""
    import numpy as np

    for name, t in tensors.items():
        if hasattr(t, "is_floating_point"):  # torch tensor
            if t.is_floating_point() and t.numel() and not bool(t.isfinite().all()):
                raise AvelError(f"weights '{name}' hold NaN or infinite values (corrupt file?)", path)
        else:
            a = np.asarray(t)
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                raise AvelError(f"weights '{name}' hold NaN or infinite values (corrupt file?)", path)
