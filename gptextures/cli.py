"""``gptextures ...``: a thin command line over the library (parse, call, print).

Each area registers its subcommands from ``gptextures.commands.<area>.register``; every handler
takes the parsed ``argparse.Namespace`` and returns a process exit code. Errors become one line,
``gptextures <command>: error: <message>`` (exit code 2); SIGINT, SIGTERM and SIGHUP stop a
command the same way (unfinished outputs are kept and resume; exit code 128 + the signal).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import __version__

_AREAS = ("data", "scoring", "publish")
#: Signals that stop a command like Ctrl-C (batch schedulers send SIGTERM; a closed terminal
#: or SSH session SIGHUP).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP, so that they unwind like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM and SIGHUP raise :class:`Terminated` (a KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_terminated) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptextures",
        description="Multi-scale Gaussian-process texture benchmark: generate, load, score.",
    )
    parser.add_argument("--version", action="version", version=f"gptextures {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        try:
            module = importlib.import_module(f"gptextures.commands.{area}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gptextures.commands.{area}":
                raise
            continue
        module.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its message (no traceback), the errno text for bare OSErrors,
    a word for the bare built-in ones."""
    if isinstance(exc, RecursionError):
        return ("input nested too deeply to read (a JSON file with thousands of nested"
                " brackets?); check the file")
    if isinstance(exc, OverflowError):
        return f"a number is too large: {exc}"
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror:  # str() would add "[Errno N]" and the path
        text = " ".join(exc.strerror.split())
        if exc.filename is not None and str(exc.filename) not in text:
            text = f"{str(exc.filename)!r}: {text}"
    if isinstance(exc, MemoryError) and not text:
        text = "out of memory"
    return text or type(exc).__name__


def _show_warning(command: str) -> Callable[..., None]:
    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        print(f"gptextures {command}: warning: {message}", file=sys.stderr)
    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning(args.command)
    try:
        with stop_signals_interrupt():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"gptextures {args.command}: interrupted ({signal.Signals(signum).name}); an"
              " unfinished output is kept, and the same command resumes it", file=sys.stderr)
        return 128 + int(signum)
    except BrokenPipeError:  # e.g. `gptextures info X | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, MemoryError, RecursionError, OverflowError,
            ImportError) as exc:
        print(f"gptextures {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
