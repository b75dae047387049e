"""Hub subcommands: ``publish`` and ``leaderboard pull|push`` (a thin layer over ``hub``).

Errors of the Hub (no token, 401/403, a refused tag, a network failure) print one
``gptextures <command>: error: <message>`` line and exit with code 2; the token is never shown.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``publish`` to the ``gptextures`` parser."""
    p = subparsers.add_parser(
        "publish", help="publish a dataset or a trained run to the Hugging Face Hub",
        description="Upload a generated dataset (HF folder, or an HDF5 file exported first) or a"
                    " trained run folder to a Hub repo in one commit, with its card, and tag that"
                    " commit. The token comes from HF_TOKEN or `hf auth login`. Publishing an"
                    " unchanged folder again makes no commit; a tag holding another dataset"
                    " fingerprint is refused. See docs/publishing.md.")
    p.add_argument("source", metavar="DATA|RUN_FOLDER",
                   help="an HF folder or HDF5 file written by `gptextures generate`, or a run"
                        " folder (config.json, run.json, weights, predictions, evaluation)")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the repo on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--tag", default=None,
                   help="tag the commit (datasets: default v<spec version>; runs: no tag)")
    p.add_argument("--revision", default="main", metavar="BRANCH",
                   help="branch to commit to (created from main if needed; default: main)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the files and the rendered card; upload nothing")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--leaderboard", default=None, metavar="FILE",
                   help="datasets: leaderboard JSON shown in the card (default: the one shipped"
                        " for the preset, when its fingerprint matches)")
    p.add_argument("--dataset-repo", default=None, metavar="OWNER/NAME",
                   help="runs: the dataset repo the results are on (required for a run)")
    p.add_argument("--dataset-revision", default=None, metavar="TAG",
                   help="runs: the dataset repo's revision (default: v<dataset version>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_publish)


def register_leaderboard_sync(sub: Any, board_path: Callable[[str, str], Path],
                              default_dir: str | None) -> None:
    """Add ``pull`` and ``push`` to the ``leaderboard`` subcommands.

    Args:
        sub: the ``leaderboard`` subparsers.
        board_path: ``(FILE|PRESET, dir) -> path`` as the other leaderboard actions resolve it.
        default_dir: where the committed leaderboards live.
    """
    s = sub.add_parser("push", help="add a leaderboard's entries to a Hub dataset repo",
                       description="Validate a local leaderboard and add its entries to"
                                   " leaderboards/<fingerprint>.json of a dataset repo (one"
                                   " commit; the card's leaderboard section follows).")
    s.add_argument("board", metavar="FILE|PRESET", help="leaderboard JSON or preset name")
    s.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the dataset repo")
    s.add_argument("--dir", default=default_dir, help="where the committed leaderboards live")
    s.add_argument("--replace", action="store_true",
                   help="overwrite remote entries of the same method that differ")
    s.add_argument("--message", default=None, help="commit message")
    s.set_defaults(func=lambda a: cmd_push(a, board_path))

    s = sub.add_parser("pull", help="merge a Hub repo's leaderboard entries into a local board",
                       description="Read leaderboards/<fingerprint>.json of a dataset repo and"
                                   " merge its entries into the local leaderboard (created when"
                                   " missing); `leaderboard render` then works on it as on any"
                                   " other.")
    s.add_argument("board", metavar="FILE|PRESET", help="local leaderboard JSON or preset name")
    s.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the dataset repo")
    s.add_argument("--dir", default=default_dir, help="where the committed leaderboards live")
    s.add_argument("--dataset", default=None, metavar="PATH|PRESET",
                   help="the dataset, when the local file does not exist yet and is no preset")
    s.add_argument("--revision", default="main", help="the repo's revision (default: main)")
    s.add_argument("--replace", action="store_true",
                   help="take the remote entry when both have the same method with other results")
    s.set_defaults(func=lambda a: cmd_pull(a, board_path))


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    print(f"gptextures {args.command}: error: {exc}", file=sys.stderr)
    return 2


def _quiet_client() -> None:
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def cmd_publish(args: argparse.Namespace) -> int:
    from ..hub import HubError, publish, resolve_token
    from ..publication import dataset_source, plan_dataset, plan_run

    if not args.dry_run:  # no token: say so before exporting or rendering anything
        try:
            resolve_token()
        except HubError as exc:
            return _fail(args, exc)
    kind = dataset_source(args.source)
    if kind == "run":
        if args.dataset_repo is None:
            raise ValueError("--dataset-repo: required for a run folder: the dataset repo"
                             " (OWNER/NAME) its results are on")
        plan = plan_run(args.source, args.repo, dataset_repo=args.dataset_repo,
                        dataset_revision=args.dataset_revision, tag=args.tag,
                        revision=args.revision)
    else:
        for opt in ("dataset_repo", "dataset_revision"):
            if getattr(args, opt) is not None:
                raise ValueError(f"--{opt.replace('_', '-')}: only for run folders")
        try:
            plan = plan_dataset(args.source, args.repo, tag=args.tag, revision=args.revision,
                                leaderboard=args.leaderboard, progress=not args.no_progress)
        except ImportError as exc:  # an optional extra (hf, plot) is missing
            raise ValueError(str(exc)) from None
    with plan:
        if args.dry_run:
            print("dry run: nothing is uploaded, no token or network is used")
            print(plan.describe(), end="")
            return 0
        for note in plan.notes:
            print(note)
        _quiet_client()
        try:
            res = publish(plan, private=args.private, message=args.message,
                          progress=not args.no_progress)
        except HubError as exc:
            return _fail(args, exc)
    print(f"published {plan.title} to {res.repo_type} repo {res.repo_id}")
    print(f"  commit {res.commit[:12]} on {plan.revision}"
          + (" (new)" if res.new_commit else " (no new commit: the files were already there)"))
    if res.tag:
        print(f"  tag {res.tag}" + (" (new)" if res.new_tag else
                                    f" (already there, same {plan.identity[0]})"))
    for note in res.notes:
        print(f"  note: {note}")
    print(f"  {res.url}")
    rev = res.tag or plan.revision
    if res.repo_type == "dataset":
        print("load it with:\n  from datasets import load_dataset\n"
              f"  ds = load_dataset(\"{res.repo_id}\", revision=\"{rev}\")")
    else:
        print(f"use it: see the model card (hf_hub_download(\"{res.repo_id}\","
              f" \"model.safetensors\", revision=\"{rev}\"))")
    return 0


def cmd_push(args: argparse.Namespace, board_path: Callable[[str, str], Path]) -> int:
    from ..hub import HubError, push_leaderboard
    from ..leaderboard import Leaderboard

    board = Leaderboard.load(board_path(args.board, args.dir))
    _quiet_client()
    try:
        res, rep = push_leaderboard(board, args.repo, replace=args.replace,
                                    message=args.message)
    except HubError as exc:
        return _fail(args, exc)
    for line in rep.lines(f"{args.repo}", "the local board"):
        print(line)
    print(f"  commit {res.commit[:12]}" + (" (new)" if res.new_commit else " (no change)"))
    print(f"  {res.url}")
    return 0


def cmd_pull(args: argparse.Namespace, board_path: Callable[[str, str], Path]) -> int:
    from .. import presets
    from ..evaluation import resolve_dataset
    from ..hub import HubError, pull_leaderboard
    from ..leaderboard import Leaderboard

    path = board_path(args.board, args.dir)
    if path.exists():
        local = Leaderboard.load(path)
        fingerprint = local.fingerprint
    else:
        source = args.dataset or (args.board if args.board in presets.names() else None)
        if source is None:
            raise FileNotFoundError(f"board: {str(path)!r} does not exist; pass --dataset to say"
                                    " which dataset's leaderboard to pull")
        local, fingerprint = None, resolve_dataset(source).fingerprint
    _quiet_client()
    try:
        board, rep = pull_leaderboard(args.repo, fingerprint, local, replace=args.replace,
                                      revision=args.revision)
    except HubError as exc:
        return _fail(args, exc)
    path.parent.mkdir(parents=True, exist_ok=True)
    board.save(path)
    for line in rep.lines(str(path), args.repo):
        print(line)
    print(f"wrote {path} ({len(board.entries)} entries); `gptextures leaderboard render {path}`"
          " writes its Markdown")
    return 0
