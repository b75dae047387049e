"""Talking to the Hugging Face Hub: publish a plan, push and pull leaderboards.

Everything goes through ``huggingface_hub`` (endpoint from ``HF_ENDPOINT``, default the Hub).
What a publication uploads is decided offline by :mod:`gptextures.publication`; here:

- :func:`publish` uploads a plan as **one commit** and then tags it. The tag is created only
  after the commit is read back and holds every planned file with the right size and hash, so
  no tag ever points at a half-uploaded commit. Publishing an unchanged folder again makes no
  commit (unchanged files are skipped); a tag that already exists must hold the same dataset
  fingerprint (or, for a model, the same weights): tags are immutable versions.
- :func:`push_leaderboard` / :func:`pull_leaderboard` keep one leaderboard JSON per dataset
  fingerprint at ``leaderboards/<fingerprint>.json`` in a dataset repo.

The token comes from ``HF_TOKEN`` or a prior ``hf auth login`` (``huggingface_hub.get_token``).
It is passed to the client and nowhere else: never printed, logged, written into a card or a
file, and every error message is scrubbed of it. Failures raise :class:`HubError` subclasses
with one clear message; rerunning the same command finishes an interrupted publication (files
already uploaded are not sent again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .leaderboard import Leaderboard
from .publication import BOARD_DIR, Plan, board_path, check_repo_id, endpoint, repo_url


# ---- errors -------------------------------------------------------------------------------
class HubError(Exception):
    """A publication failed; the message says why and what to do (never the token)."""


class HubAuthError(HubError, PermissionError):
    """No token, a token the Hub rejects (401) or one that cannot write the repo (403)."""


class HubNotFoundError(HubError, FileNotFoundError):
    """The repo (or the revision) does not exist, or the token cannot see it."""


class HubConnectionError(HubError, ConnectionError):
    """The network failed; nothing was tagged, and rerunning the command finishes the job."""


class HubConflictError(HubError, ValueError):
    """The Hub holds something this publication must not overwrite (a tag of another dataset
    fingerprint, a leaderboard entry of the same method with other results)."""


def resolve_token(token: str | None = None) -> str:
    """The token to use: ``token``, else ``HF_TOKEN``, else the one ``hf auth login`` saved."""
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise HubAuthError("no Hugging Face token: set HF_TOKEN to a token with write access"
                           " (https://huggingface.co/settings/tokens) or run `hf auth login`")
    return found


@dataclass
class PublishResult:
    """What :func:`publish` did."""

    repo_id: str
    repo_type: str
    commit: str
    new_commit: bool
    tag: str | None
    new_tag: bool
    url: str
    notes: list[str] = field(default_factory=list)


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---- talking to the Hub --------------------------------------------------------------------
_TRANSPORT = {"TransportError", "TimeoutException", "NetworkError", "ProtocolError",
              "ConnectionError", "Timeout", "ChunkedEncodingError"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling, innermost last."""
    e: BaseException | None = exc
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def _is_network_error(e: BaseException) -> bool:
    """A transport failure (connection refused or cut, timeout), not an HTTP answer."""
    root = type(e).__module__.split(".")[0]
    return isinstance(e, (ConnectionError, TimeoutError)) or (
        root in ("httpx", "httpx2", "httpcore", "requests", "urllib3")
        and any(c.__name__ in _TRANSPORT for c in type(e).__mro__))


def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def _server_message(exc: BaseException) -> str:
    msg = getattr(exc, "server_message", None)
    if msg:
        return str(msg).strip().splitlines()[0]
    resp = getattr(exc, "response", None)
    header = resp.headers.get("X-Error-Message") if resp is not None else None
    return header or str(exc).strip().splitlines()[0]


_RERUN = ("Nothing was tagged; rerun the same command to finish (files already uploaded are"
          " not sent again).")


def _http_error(e: BaseException, action: str, repo_id: str, scrub: Callable[[str], str]
                ) -> HubError:
    """The :class:`HubError` for an HTTP answer of the Hub (``HfHubHTTPError``)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    status, msg = _status(e), scrub(_server_message(e))
    if isinstance(e, RevisionNotFoundError):
        return HubNotFoundError(f"{action}: revision not found on {repo_id} ({msg})")
    if status == 401 and ("Invalid credentials" in msg
                          or not isinstance(e, RepositoryNotFoundError)):
        return HubAuthError(f"the Hub rejected the token (401 Unauthorized: {msg}); set"
                            " HF_TOKEN to a valid token or run `hf auth login`")
    if isinstance(e, RepositoryNotFoundError):
        return HubNotFoundError(f"{action}: {repo_id} does not exist or this token cannot see"
                                f" it ({status})")
    if status == 403:
        return HubAuthError(f"{action}: this token cannot write to {repo_id} (403 Forbidden:"
                            f" {msg}); use a token with write access to that namespace")
    if status == 412:
        return HubConflictError(f"{action}: {repo_id} changed while publishing (412); rerun"
                                " the command")
    if status is not None and status >= 500:
        return HubConnectionError(f"{action}: the Hub answered {status} ({msg}). {_RERUN}")
    return HubError(f"{action}: the Hub answered {status} ({msg})")


@contextlib.contextmanager
def _hub_errors(token: str | None, action: str, repo_id: str) -> Iterator[None]:
    """Turn client errors into one-line :class:`HubError` messages, scrubbed of the token.

    An HTTP answer anywhere in the exception's chain (uploads wrap it in a RuntimeError) is
    reported by its status; a transport failure as a network failure; anything else is a bug
    and propagates.
    """
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    def scrub(text: str) -> str:
        return text.replace(token, "***") if token else text

    try:
        yield
    except HubError as e:
        raise type(e)(scrub(str(e))) from None
    except OfflineModeIsEnabled:
        raise HubConnectionError("HF_HUB_OFFLINE is set: unset it to reach the Hub") from None
    except Exception as e:  # noqa: BLE001 - client errors come wrapped in several types
        chain = list(_chain(e))
        http = next((x for x in chain if isinstance(x, HfHubHTTPError)
                     and _status(x) is not None), None)
        if http is not None:
            raise _http_error(http, action, repo_id, scrub) from None
        net = next((x for x in chain if _is_network_error(x)), None)
        if net is None:
            raise
        detail = scrub(f"{type(net).__name__}: {net}")
        raise HubConnectionError(f"network failure while {action} ({detail}). {_RERUN}"
                                 ) from None


class _Hub:
    """The client calls of one publication, each wrapped in :func:`_hub_errors`."""

    def __init__(self, token: str | None, *, write: bool = True):
        from huggingface_hub import HfApi, get_token

        # Reading a public repo needs no token; writing always does.
        self.token = resolve_token(token) if write else (token or get_token())
        self.api = HfApi(token=self.token)

    def call(self, action: str, repo_id: str, fn: Callable[..., Any], *args: Any,
             **kwargs: Any) -> Any:
        with _hub_errors(self.token, action, repo_id):
            return fn(*args, **kwargs)

    def check_writer(self, repo_id: str) -> None:
        who = self.call("checking the token", repo_id, self.api.whoami)
        role = (((who or {}).get("auth") or {}).get("accessToken") or {}).get("role")
        if role == "read":
            raise HubAuthError(f"the token is read-only; publishing to {repo_id} needs a token"
                               " with write access")

    def read_text(self, repo_id: str, repo_type: str, path: str, revision: str) -> str | None:
        """A small file of the repo at ``revision`` (None when the Hub says there is none)."""
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        with tempfile.TemporaryDirectory(prefix="gptextures-hub-") as tmp, \
                _hub_errors(self.token, f"reading {path}", repo_id):
            try:
                p = self.api.hf_hub_download(repo_id, path, repo_type=repo_type,
                                             revision=revision, cache_dir=tmp)
            except EntryNotFoundError as e:
                if isinstance(e, HfHubHTTPError):  # the Hub answered: no such file
                    return None
                raise  # not found locally because the Hub could not be reached
            return Path(p).read_text(encoding="utf-8")

    def files(self, repo_id: str, repo_type: str, revision: str) -> list[str]:
        return self.call("listing files", repo_id, self.api.list_repo_files, repo_id,
                         repo_type=repo_type, revision=revision)

    def refs(self, repo_id: str, repo_type: str) -> tuple[dict[str, str], dict[str, str]]:
        refs = self.call("listing branches and tags", repo_id, self.api.list_repo_refs,
                         repo_id, repo_type=repo_type)
        return ({b.name: b.target_commit for b in refs.branches},
                {t.name: t.target_commit for t in refs.tags})


def _remote_fingerprint(hub: _Hub, repo_id: str, revision: str) -> str | None:
    text = hub.read_text(repo_id, "dataset", "gptextures.json", revision)
    return None if text is None else json.loads(text).get("fingerprint")


def _tag_identity(hub: _Hub, plan: Plan, tag: str) -> str | None:
    if plan.kind == "dataset":
        return _remote_fingerprint(hub, plan.repo_id, tag)
    infos = hub.call("reading the tag", plan.repo_id, hub.api.get_paths_info, plan.repo_id,
                     ["model.safetensors"], repo_type="model", revision=tag)
    lfs = getattr(infos[0], "lfs", None) if infos else None
    return None if lfs is None else lfs.sha256


@contextlib.contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """huggingface_hub's upload bars on or off for a while (its global switch restored)."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    (enable_progress_bars if show else disable_progress_bars)()
    try:
        yield
    finally:
        (disable_progress_bars if was_disabled else enable_progress_bars)()


def publish(plan: Plan, *, private: bool = False, token: str | None = None,
            message: str | None = None, progress: bool = False) -> PublishResult:
    """Upload a plan as one commit on ``plan.revision`` and tag it (see the module docstring).

    Raises:
        HubAuthError: no token, a rejected token (401) or no write access (403).
        HubConflictError: ``plan.tag`` exists and holds another dataset fingerprint (or other
            weights); a dataset the results refer to has another fingerprint.
        HubConnectionError: the network failed (rerun to finish).
    """
    with _progress_bars(progress):
        return _publish(plan, _Hub(token), private, message)


def _publish(plan: Plan, hub: _Hub, private: bool, message: str | None) -> PublishResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    repo, kind = plan.repo_id, plan.repo_type
    hub.check_writer(repo)
    notes: list[str] = []
    for ds_repo, ds_rev, fp in plan.requires:
        try:
            remote = _remote_fingerprint(hub, ds_repo, ds_rev)
        except HubNotFoundError as e:
            raise HubConflictError(
                f"dataset_repo: {e}; the results must refer to a published dataset: publish it"
                f" there first (gptextures publish DATA --repo {ds_repo}) or pass the right"
                " --dataset-repo / --dataset-revision") from None
        if remote != fp:
            raise HubConflictError(
                f"dataset_repo: {ds_repo} at {ds_rev} holds "
                + (f"fingerprint {remote[:12]}..." if remote else "no gptextures dataset")
                + f", the results are on {fp[:12]}...; publish the dataset there first"
                " (gptextures publish DATA --repo ...) or pass the right --dataset-revision")
    hub.call("creating the repo", repo, hub.api.create_repo, repo, repo_type=kind,
             private=private or None, exist_ok=True)  # None: the namespace's default
    info = hub.call("reading the repo", repo, hub.api.repo_info, repo, repo_type=kind)
    if private and not getattr(info, "private", True):
        notes.append(f"{repo} already exists and is public; --private applies to new repos")
    branches, tags = hub.refs(repo, kind)
    tag_exists = plan.tag is not None and plan.tag in tags
    if tag_exists:
        held = _tag_identity(hub, plan, plan.tag)
        if held != plan.identity[1]:
            raise HubConflictError(
                f"tag: {plan.tag} of {repo} already holds {plan.identity[0]} "
                f"{(held or 'unknown')[:12]}..., this is {plan.identity[1][:12]}...; tags are"
                " immutable versions: publish under another --tag (or bump the spec's version)")
    if plan.revision not in branches:
        hub.call("creating the branch", repo, hub.api.create_branch, repo,
                 branch=plan.revision, repo_type=kind)
        branches, _ = hub.refs(repo, kind)
    head = branches[plan.revision]
    remote_files = hub.files(repo, kind, head)
    if plan.kind == "dataset" and plan.render_card is not None:
        _merge_remote_board(hub, plan, remote_files, head, notes)
    planned = {u.path_in_repo for u in plan.files}
    stale = [p for p in remote_files if p.startswith(plan.stale_prefixes) and p not in planned]
    ops: list[Any] = [CommitOperationAdd(u.path_in_repo, u.source) for u in plan.files]
    ops += [CommitOperationDelete(p) for p in stale]
    msg = message or f"Publish {plan.title}" + (f" ({plan.tag})" if plan.tag else "")
    commit = hub.call("uploading", repo, hub.api.create_commit, repo, ops, commit_message=msg,
                      repo_type=kind, revision=plan.revision, parent_commit=head)
    oid = commit.oid
    _verify_commit(hub, plan, oid, ops)
    new_tag = False
    if plan.tag is not None and not tag_exists:
        hub.call("tagging", repo, hub.api.create_tag, repo, tag=plan.tag, revision=oid,
                 repo_type=kind, tag_message=msg)
        new_tag = True
    return PublishResult(repo, kind, oid, oid != head, plan.tag, new_tag,
                         repo_url(repo, kind, plan.tag or plan.revision), notes)


def _verify_commit(hub: _Hub, plan: Plan, oid: str, ops: Sequence[Any]) -> None:
    """Read the commit back: every planned file, with its size and hash, or a HubError."""
    paths = [u.path_in_repo for u in plan.files]
    infos = hub.call("checking the commit", plan.repo_id, hub.api.get_paths_info,
                     plan.repo_id, paths, repo_type=plan.repo_type, revision=oid)
    remote = {i.path: i for i in infos}
    by_path = {op.path_in_repo: op for op in ops if hasattr(op, "upload_info")}
    for u in plan.files:
        r = remote.get(u.path_in_repo)
        ok = r is not None and r.size == u.size
        if ok and getattr(r, "lfs", None) is not None:
            ok = r.lfs.sha256 == by_path[u.path_in_repo].upload_info.sha256.hex()
        elif ok:
            data = u.source if isinstance(u.source, bytes) else u.source.read_bytes()
            ok = r.blob_id == _git_blob_oid(data)
        if not ok:
            raise HubError(f"commit {oid[:12]} of {plan.repo_id} does not hold {u.path_in_repo}"
                           " as uploaded; nothing was tagged; rerun the command")


def _merge_remote_board(hub: _Hub, plan: Plan, remote_files: list[str], head: str,
                        notes: list[str]) -> None:
    fp = plan.identity[1]
    path = board_path(fp)
    if path not in remote_files:
        return
    text = hub.read_text(plan.repo_id, "dataset", path, head)
    remote = Leaderboard.from_dict(json.loads(text), where=f"{plan.repo_id}:{path}")
    if plan.board is not None:
        rep = merge_boards(remote, plan.board, replace=False)
        if rep.added or rep.conflicts:
            notes += rep.lines(f"the leaderboard of {plan.repo_id}", "the local board")
    plan.board = remote
    plan.set_file(path, remote.to_json().encode())
    plan.set_file("README.md", plan.render_card(remote).encode())


# ---- leaderboards ------------------------------------------------------------------------
@dataclass
class MergeReport:
    """Methods added, already equal, replaced, and in conflict (kept as they were)."""

    added: list[str] = field(default_factory=list)
    same: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def lines(self, into: str, source: str) -> list[str]:
        out = [f"{into}: {len(self.added)} entries added from {source}, {len(self.same)}"
               f" already there, {len(self.replaced)} replaced"]
        if self.conflicts:
            out.append(f"{into}: kept its own results for {', '.join(self.conflicts)} (the"
                       f" {source} entries of the same method differ; --replace takes them)")
        return out


def merge_boards(base: Leaderboard, incoming: Leaderboard, *, replace: bool) -> MergeReport:
    """Add ``incoming``'s entries to ``base`` (validated against ``base``'s fingerprint).

    An entry whose method is not in ``base`` is added; an identical one is skipped; a different
    one of the same method is a conflict: replaced when ``replace``, else kept and reported.
    """
    from .evaluation import FingerprintMismatchError

    if incoming.fingerprint != base.fingerprint:
        raise FingerprintMismatchError(
            f"leaderboard: entries for fingerprint {incoming.fingerprint[:12]}... cannot join the"
            f" leaderboard of {base.fingerprint[:12]}...")
    rep = MergeReport()
    mine = {e["method"]: e for e in base.entries}
    for e in incoming.entries:
        old = mine.get(e["method"])
        if old is None:
            base.add(e)
            rep.added.append(e["method"])
        elif json.dumps(old, sort_keys=True) == json.dumps(e, sort_keys=True):
            rep.same.append(e["method"])
        elif replace:
            base.add(e, replace=True)
            rep.replaced.append(e["method"])
        else:
            rep.conflicts.append(e["method"])
    return rep


def push_leaderboard(board: Leaderboard, repo_id: str, *, replace: bool = False,
                     token: str | None = None, message: str | None = None
                     ) -> tuple[PublishResult, MergeReport]:
    """Add a local leaderboard's entries to ``leaderboards/<fingerprint>.json`` of a dataset repo.

    The remote board is read, validated and merged (an entry of the same method with other
    results is refused unless ``replace``), then written in one commit whose parent is the
    commit read (a concurrent push makes it fail instead of losing entries; rerun). When the
    repo's card has a leaderboard section for this fingerprint, it is updated in the same commit.
    """
    check_repo_id(repo_id)
    with _progress_bars(False):
        return _push(board, repo_id, replace, _Hub(token), message)


def _push(board: Leaderboard, repo_id: str, replace: bool, hub: _Hub, message: str | None
          ) -> tuple[PublishResult, MergeReport]:
    from huggingface_hub import CommitOperationAdd

    hub.check_writer(repo_id)
    hub.call("creating the repo", repo_id, hub.api.create_repo, repo_id, repo_type="dataset",
             exist_ok=True)
    branches, _ = hub.refs(repo_id, "dataset")
    head = branches["main"]
    path = board_path(board.fingerprint)
    files = hub.files(repo_id, "dataset", head)
    if path in files:
        text = hub.read_text(repo_id, "dataset", path, head)
        merged = Leaderboard.from_dict(json.loads(text), where=f"{repo_id}:{path}")
        if merged.fingerprint != board.fingerprint:
            from .evaluation import FingerprintMismatchError

            raise FingerprintMismatchError(
                f"{repo_id}:{path} holds the leaderboard of fingerprint"
                f" {merged.fingerprint[:12]}..., not {board.fingerprint[:12]}...; fix that file")
    else:
        merged = Leaderboard(board.dataset, board.level_names, board.split)
    rep = merge_boards(merged, board, replace=replace)
    if rep.conflicts:
        raise HubConflictError(
            f"leaderboard: {repo_id} already has other results for {', '.join(rep.conflicts)};"
            " pull first to compare, rename the method, or pass --replace to overwrite them")
    ops = [CommitOperationAdd(path, merged.to_json().encode())]
    if "README.md" in files:
        readme = hub.read_text(repo_id, "dataset", "README.md", head) or ""
        updated = _card_with_board(readme, merged)
        if updated is not None and updated != readme:
            ops.append(CommitOperationAdd("README.md", updated.encode()))
    msg = message or (f"Leaderboard {board.dataset['name']} ({board.fingerprint[:12]}): "
                      f"+{len(rep.added)} entries")
    commit = hub.call("pushing the leaderboard", repo_id, hub.api.create_commit, repo_id, ops,
                      commit_message=msg, repo_type="dataset", revision="main",
                      parent_commit=head)
    res = PublishResult(repo_id, "dataset", commit.oid, commit.oid != head, None, False,
                        f"{endpoint()}/datasets/{repo_id}/blob/main/{path}")
    return res, rep


def _card_with_board(readme: str, board: Leaderboard) -> str | None:
    """The card with its leaderboard section replaced, when it has one for this fingerprint."""
    from .leaderboard import README_END, README_START

    if readme.count(README_START) != 1 or readme.count(README_END) != 1 \
            or f"fingerprint `{board.fingerprint[:12]}`" not in readme:
        return None
    a = readme.index(README_START) + len(README_START)
    b = readme.index(README_END)
    if b < a:
        return None
    return readme[:a] + "\n" + board.to_markdown() + readme[b:]


def pull_leaderboard(repo_id: str, fingerprint: str, local: Leaderboard | None = None, *,
                     replace: bool = False, token: str | None = None,
                     revision: str = "main") -> tuple[Leaderboard, MergeReport]:
    """Merge the entries of a repo's leaderboard for ``fingerprint`` into ``local``.

    Reading needs no token for a public repo (one is used when set). Local entries win over
    remote entries of the same method unless ``replace``. Returns the merged board (``local``
    updated, or a new one when ``local`` is None) and what changed.
    """
    check_repo_id(repo_id)
    with _progress_bars(False):
        return _pull(repo_id, fingerprint, local, replace, _Hub(token, write=False), revision)


def _pull(repo_id: str, fingerprint: str, local: Leaderboard | None, replace: bool, hub: _Hub,
          revision: str) -> tuple[Leaderboard, MergeReport]:
    path = board_path(fingerprint)
    text = hub.read_text(repo_id, "dataset", path, revision)
    if text is None:
        files = hub.files(repo_id, "dataset", revision)
        have = sorted(p[len(BOARD_DIR) + 1:-5][:12] for p in files
                      if p.startswith(BOARD_DIR + "/") and p.endswith(".json"))
        raise FileNotFoundError(f"{repo_id} has no leaderboard for fingerprint"
                                f" {fingerprint[:12]}... (it has: {', '.join(have) or 'none'})")
    remote = Leaderboard.from_dict(json.loads(text), where=f"{repo_id}:{path}")
    if local is None:
        local = Leaderboard(remote.dataset, remote.level_names, remote.split)
    rep = merge_boards(local, remote, replace=replace)
    return local, rep
