"""Scoring subcommands: ``evaluate`` and ``leaderboard show|add|render``.

A thin layer over :mod:`gptextures.evaluation` and :mod:`gptextures.leaderboard`: parse, call,
print. Library errors are printed by the dispatcher with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _shipped_dir() -> str:
    from ..leaderboard import SHIPPED_DIR

    return str(SHIPPED_DIR)


def register(subparsers: Any) -> None:
    """Add ``evaluate`` and ``leaderboard`` to the ``gptextures`` parser."""
    p = subparsers.add_parser(
        "evaluate", help="score a predictions file per scale (joint and per-level accuracy)",
        description="Score a submission file (JSON or CSV, see docs/evaluation.md) against a"
                    " dataset. Refuses a fingerprint mismatch, missing or duplicate ids, wrong"
                    " shapes, NaN and out-of-range classes.")
    p.add_argument("--dataset", default=None, metavar="PATH|PRESET",
                   help="dataset file/folder, preset name or spec JSON (default: the preset"
                        " whose fingerprint the predictions file names)")
    p.add_argument("--predictions", required=True, metavar="FILE", help="submission file")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="bootstrap resamples for percentile confidence intervals, at most"
                        " 100000 (default: 0)")
    p.add_argument("--prediction-type", default="auto",
                   choices=["auto", "probabilities", "logits"],
                   help="what float scores are (default: as the file states, else inferred:"
                        " rows in [0, 1] summing to 1 are probabilities; ambiguous scores are"
                        " refused)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_evaluate)

    lb = subparsers.add_parser("leaderboard", help="show, add to or render the leaderboards")
    sub = lb.add_subparsers(dest="action", metavar="ACTION", required=True)

    s = sub.add_parser("show", help="print a leaderboard (ranked)")
    s.add_argument("board", metavar="FILE|PRESET",
                   help="leaderboard JSON, or a preset name looked up in --dir (default: the"
                        " leaderboards shipped with gptextures)")
    s.add_argument("--dir", default=None, help="where to look up preset names (default: the"
                                               " shipped leaderboards, gptextures/leaderboards)")
    s.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    s.set_defaults(func=cmd_show)

    a = sub.add_parser("add", help="validate an entry (or run folders) and add it to a leaderboard")
    a.add_argument("board", metavar="FILE|PRESET", help="leaderboard JSON or preset name")
    a.add_argument("entry", metavar="ENTRY.json|RUN_FOLDER", nargs="+",
                   help="the entry (schema: docs/evaluation.md), or the run folders of one"
                        " recipe's seeds (>= 3; layout: docs/baselines.md), made into one entry")
    a.add_argument("--method", default=None,
                   help="with run folders: the name in the table (default: the runs' config)")
    a.add_argument("--dir", default=None, help="where to look up preset names (default: the"
                                               " shipped leaderboards, gptextures/leaderboards)")
    a.add_argument("--dataset", default=None, metavar="PATH|PRESET",
                   help="create the leaderboard for this dataset if the file does not exist")
    a.add_argument("--replace", action="store_true", help="replace an entry of the same method")
    a.set_defaults(func=cmd_add)

    r = sub.add_parser("render", help="write each leaderboard's Markdown and the README section")
    r.add_argument("boards", nargs="*", metavar="FILE",
                   help="leaderboard JSON files (default: every *.json in --dir)")
    r.add_argument("--dir", default=None, help="where the leaderboards are (default: the"
                                               " shipped ones, gptextures/leaderboards)")
    r.add_argument("--readme", default=None, metavar="README.md",
                   help="also rewrite the section between <!-- leaderboard:start --> and"
                        " <!-- leaderboard:end -->")
    r.set_defaults(func=cmd_render)

    from .publish import register_leaderboard_sync  # pull/push: the Hub (commands/publish.py)

    register_leaderboard_sync(sub, _board_path, None)  # --dir default: the shipped boards


def _board_path(board: str, directory: str | None) -> Path:
    from .. import presets
    from ..leaderboard import shipped_board_path

    p = Path(board)
    if p.suffix == ".json" or p.exists():
        return p
    if board in presets.names():
        return shipped_board_path(board) if directory is None \
            else Path(directory) / f"{board}.json"
    raise FileNotFoundError(
        f"board: {board!r} is neither a leaderboard file nor a preset"
        f" ({', '.join(presets.names())})"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_submission

    result = evaluate_submission(args.predictions, args.dataset, bootstrap=args.bootstrap,
                                 confidence=args.confidence, seed=args.seed,
                                 prediction_type=args.prediction_type)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..leaderboard import Leaderboard

    board = Leaderboard.load(_board_path(args.board, args.dir))
    print(board.to_json() if args.json else board.to_markdown(), end="")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from .. import presets
    from ..evaluation import resolve_dataset
    from ..io.meta import parse_json, read_text
    from ..leaderboard import Leaderboard

    path = _board_path(args.board, args.dir)
    if path.exists():
        board = Leaderboard.load(path)
    else:
        source = args.dataset or (args.board if args.board in presets.names() else None)
        if source is None:
            raise FileNotFoundError(
                f"board: {str(path)!r} does not exist; pass --dataset to create it"
            )
        board = Leaderboard.for_dataset(resolve_dataset(source))
    paths = [Path(e) for e in args.entry]
    if all(p.is_dir() for p in paths):
        from ..runs import entry_from_runs

        entry = entry_from_runs(paths, method=args.method)
        where = f"runs {', '.join(map(str, paths))}"
    elif len(paths) == 1:
        entry_path = paths[0]
        if not entry_path.exists():
            raise FileNotFoundError(f"entry: no such file or run folder {str(entry_path)!r}")
        entry = parse_json(read_text(entry_path, "entry"), entry_path, "entry")
        where = f"entry {str(entry_path)!r}"
    else:
        raise ValueError("entry: give one entry JSON file, or run folders only (the seeds of one"
                         f" recipe); got {', '.join(map(str, paths))}")
    e = board.add(entry, replace=args.replace, where=where)
    board.save(path)
    rank = next(r for r, x in board.ranked() if x is e)
    print(f"added {e['method']!r} to {path} (rank {rank} of {len(board.entries)})")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .. import presets
    from ..leaderboard import Leaderboard, update_readme

    directory = args.dir or _shipped_dir()
    paths = [Path(b) for b in args.boards] or sorted(Path(directory).glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"boards: no leaderboard JSON files in {directory!r}")
    order = {n: i for i, n in enumerate(presets.names())}
    boards = sorted(((p, Leaderboard.load(p)) for p in paths),
                    key=lambda pb: (order.get(pb[1].dataset["name"], len(order)),
                                    pb[1].dataset["name"]))
    sections = []
    for p, board in boards:
        md = board.to_markdown(heading=f"### {board.dataset['name']}")
        out = p.with_suffix(".md")
        out.write_text(md, encoding="utf-8")
        print(f"wrote {out}")
        sections.append(md)
    if args.readme:
        update_readme(args.readme, sections)
        print(f"updated the leaderboard section of {args.readme}")
    return 0
