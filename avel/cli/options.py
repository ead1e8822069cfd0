"""Validated option types for every command: argparse `type=` callables with a stated range.

A bad value stops the command before any work, with argparse's own line
(`avel COMMAND: error: argument --x: must be >= 1, got -2`, exit 2). Each validator carries a
`range_text` that `show_ranges` appends to the option's --help, so the valid range is documented
where the option is. New numeric options use these, never a bare `type=int` / `type=float`
(tests/test_faults.py checks every command for that).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path


class Number:
    """An int or float option bounded below (and optionally above); the bounds are inclusive unless `open_low`."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None,
                 open_low: bool = False) -> None:
        self.kind, self.low, self.high, self.open_low = kind, low, high, open_low
        self.__name__ = kind.__name__  # argparse names the type in its messages
        low_text = None if low is None else f"{'>' if open_low else '>='} {low:g}"
        if low is not None and high is not None:
            self.range_text = f"{'>' if open_low else ''}{low:g}..{high:g}"
        else:
            self.range_text = low_text or (f"<= {high:g}" if high is not None else "")

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if self.kind is int else 'a number'}, "
                                             f"got '{text}'") from None
        if self.kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got '{text}'")
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {self.range_text}, got {text}")
        return value


positive_int = Number(int, 1)  # counts, sizes, epochs, threads, workers
nonneg_int = Number(int, 0)  # seeds, indices, "0 = automatic"
positive_float = Number(float, 0.0, open_low=True)  # learning rates
nonneg_float = Number(float, 0.0)


def int_range(low: int, high: int) -> Number:
    """An integer in low..high (inclusive)."""
    return Number(int, low, high)


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N (whether CUDA is present is checked when the command starts)."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got '{text}'")
    return text



def out_dir(text: str) -> Path:
    """An output folder: it may not exist yet, but must not be an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} exists and is not a folder")
    return path


def show_ranges(parser: argparse.ArgumentParser) -> None:
    """Append each validated option's range to its help text, in every subcommand (called once)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                show_ranges(sub)
            continue
        text = getattr(action.type, "range_text", "")
        if text and action.help and action.help is not argparse.SUPPRESS and "[range:" not in action.help:
            action.help = f"{action.help} [range: {text}]"


def all_options(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Yield (command words, action) for every option of every subcommand (tests walk this)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_options(sub, prefix + (name,))
        elif action.option_strings or action.dest != "help":
            yield prefix, action
