"""The `avel` command line: one module per command group, each exposing `register(subparsers)`.

A command module adds its parser(s) and sets `func` (called with the parsed args, returns an exit
code). Modules import heavy libraries (torch, av) inside their handlers so `avel --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from avel import __version__
from avel.errors import AvelError

# Command groups, in the order `avel --help` lists them.
COMMAND_MODULES = ("data", "train", "evaluate", "crossmodal", "extract", "localize", "models", "import_authors", "reproduce")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avel", description="Audio-visual event localization in videos (Tian et al., ECCV 2018).")
    parser.add_argument("--version", action="version", version=f"avel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"avel.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"avel.cli.{name}":
                continue  # command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one line `avel: error: ...` and return a non-zero code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AvelError as exc:
        print(f"avel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("avel: interrupted", file=sys.stderr)
        return 130
