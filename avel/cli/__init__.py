"""The `avel` command line: one module per command group, each exposing `register(subparsers)`.

A command module adds its parser(s) and sets `func` (called with the parsed args, returns an exit
code). Modules import heavy libraries (torch, av) inside their handlers so `avel --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from avel import __version__
from avel.errors import AvelError

# Command groups, in the order `avel --help` lists them.
COMMAND_MODULES = ("data", "train", "evaluate", "crossmodal", "extract", "localize", "models", "import_weights", "reproduce")


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
    from avel.cli.options import show_ranges

    show_ranges(parser)  # every validated option's range in --help
    return parser


INTERRUPT_REDELIVERY_S = 0.05  # s: delay before a swallowed Ctrl-C is delivered again
SIGPIPE_EXIT = 128 + 13  # the shell's status for a process killed by SIGPIPE (`avel evaluate RUN | head -1`)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one line `avel: error: PATH: problem` and return a non-zero code.

    Failures caught here once for every command: AvelError; a full disk, quota, read-only file system
    or permission error (one line naming the path written); a closed stdout pipe (quiet, status 141);
    Ctrl-C (status 130, also when the interrupt first landed in a finalizer that swallowed it).
    """
    args = build_parser().parse_args(argv)
    previous_hook, previous_stdout = sys.unraisablehook, sys.stdout
    sys.unraisablehook = _redeliver_interrupt(previous_hook)
    sys.stdout = _NamedStdout(previous_stdout)
    try:
        return _run(args)
    finally:
        sys.unraisablehook, sys.stdout = previous_hook, previous_stdout


def _run(args: argparse.Namespace) -> int:
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a full disk or a closed pipe behind stdout shows here, not at exit
        return code
    except AvelError as exc:
        return _fail(str(exc), exc.exit_code)
    except (BrokenPipeError, StdoutClosed):
        _silence_stdout()
        return SIGPIPE_EXIT
    except KeyboardInterrupt:
        print("avel: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from avel.errors import bounded
        from avel.io import write_problem

        reason = write_problem(exc)
        if reason is None and not (isinstance(exc, OSError) and exc.filename):
            raise  # a bug: keep the traceback
        where = getattr(exc, "filename", None) or "(file not named by the library)"
        if getattr(exc, "from_stdout", False):
            _silence_stdout()  # the rest of the buffered output cannot be written either
        return _fail(f"{bounded(str(where))}: {reason or bounded(exc.strerror or str(exc))}", AvelError.exit_code)


class StdoutClosed(OSError):
    """The reader of stdout went away (`| head -1`). Not a BrokenPipeError, so that no library on the
    way (rich exits with status 1 on one) handles it: main ends quietly with the SIGPIPE status."""


class _NamedStdout:
    """sys.stdout for the duration of a command: a failed write (full disk behind `> out.json`) is an
    OSError naming where stdout goes, so it is told apart from other files' write errors; a closed
    pipe is StdoutClosed."""

    def __init__(self, stream) -> None:  # noqa: ANN001 (any text stream)
        self._stream = stream

    def _named(self, exc: OSError) -> OSError:
        if isinstance(exc, BrokenPipeError):
            return StdoutClosed(exc.errno, exc.strerror)
        err = OSError(exc.errno, exc.strerror or str(exc), _stdout_target())
        err.from_stdout = True  # type: ignore[attr-defined]
        return err

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise self._named(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise self._named(exc) from None

    def __getattr__(self, name: str):  # noqa: ANN204 (everything else: the real stream's)
        return getattr(self._stream, name)


def _fail(line: str, code: int) -> int:
    print(f"avel: error: {line}", file=sys.stderr)
    return code


def _stdout_target() -> str:
    """What stdout writes to (the file of `> out.json`), for error messages."""
    try:
        return os.readlink(f"/proc/self/fd/{sys.stdout.fileno()}")
    except (OSError, ValueError, AttributeError):
        return "<stdout>"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of unwritable output stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _redeliver_interrupt(previous):  # noqa: ANN001, ANN202 (sys.unraisablehook's signature)
    """An unraisablehook that re-raises SIGINT when a KeyboardInterrupt was swallowed by a finalizer or
    weakref callback (Python can only print those), so Ctrl-C always stops the command."""
    import signal
    import threading

    def hook(unraisable) -> None:  # noqa: ANN001
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # Sent from another thread a moment later, so that it lands after the callback has returned
            # (a signal raised here would be handled, and swallowed, inside it); swallowed again, it re-arms.
            timer = threading.Timer(INTERRUPT_REDELIVERY_S, os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    return hook
