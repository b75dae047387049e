"""``gptextures ...``: a thin command line over the library (parse, call, print).

Each area registers its subcommands from ``gptextures.commands.<area>.register``; every handler
takes the parsed ``argparse.Namespace`` and returns a process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from . import __version__

_AREAS = ("data", "scoring", "publish")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        print(f"gptextures {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `gptextures info X | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
