"""A local stand-in for the Hugging Face Hub: test equipment, not a product.

Standard library only, bound to 127.0.0.1. It implements the HTTP endpoints that
``huggingface_hub`` (with ``HF_HUB_DISABLE_XET=1``) and ``datasets.load_dataset`` call for what
``gptextures publish`` and ``gptextures leaderboard pull/push`` use, with the Hub's response
shapes as the installed client parses them:

- ``GET /api/whoami-v2``; ``POST /api/repos/create``; ``POST /api/validate-yaml``
- ``GET /api/{type}s/{repo}[/revision/{rev}]`` (repo info), ``GET .../refs``,
  ``POST .../branch/{name}``, ``POST .../tag/{rev}``, ``GET .../commits/{rev}``
- ``GET .../tree/{rev}[/{path}]`` (listing), ``POST .../paths-info/{rev}``
- ``POST .../preupload/{rev}``, ``POST /{prefix}{repo}.git/info/lfs/objects/batch``,
  ``PUT /lfs-upload/{type}/{repo}/{sha256}`` (basic transfer, checked against the announced
  sha256 and size; objects are stored per repo), ``POST /lfs-verify/...``,
  ``POST .../commit/{rev}`` (NDJSON: files, LFS files, deletions; ``parentCommit`` checked)
- ``HEAD/GET /{prefix}{repo}/resolve/{rev}/{path}`` with single ``Range: bytes=a-b`` requests

Repositories live in memory: each commit is a full snapshot ``path -> content`` (a commit is
atomic, as on the Hub); branches and tags point at commits. Authentication: ``tokens`` maps a
token to ``(user, role)``, role ``"write"`` or ``"read"``; writing without a token or with an
unknown one answers 401, with a read token or into another user's namespace 403; private repos
are hidden (401/404) from other users. Failure injection: ``faults["lfs-upload"] = n`` drops
the connection in the middle of the next ``n`` LFS uploads (after reading half the body),
``faults["commit"]`` / ``faults["tag"]`` drop the next commit / tag request without an answer.

Run by hand: ``python tests/hub_standin.py --port 8765 --token hf_x:alice:write``, then
``HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_x gptextures publish ...``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".safetensors", ".png", ".pt", ".bin", ".h5", ".arrow")
LFS_MIN_BYTES = 10 * 2**20
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    spec = "https://git-lfs.github.com/spec/v1"
    return f"version {spec}\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Blob:
    """One file of a commit; ``lfs`` files are stored by sha256 (their pointer is the git blob)."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        return git_blob_oid(lfs_pointer(self.sha256, len(self.data)) if self.lfs else self.data)


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, Blob]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)  # uploaded objects by sha256

    def resolve(self, rev: str) -> str | None:
        rev = unquote(rev)
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if rev.startswith(prefix):
                return refs.get(rev[len(prefix):])
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        hits = [c for c in self.commits if c.startswith(rev)] if len(rev) >= 7 else []
        return hits[0] if len(hits) == 1 else None


class HubState:
    """Everything the stand-in holds; tests read it (commits, tags, files) to check results."""

    def __init__(self, tokens: dict[str, tuple[str, str]]):
        self.tokens = dict(tokens)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.faults: dict[str, int] = {}
        self.requests: list[str] = []
        self.lock = threading.RLock()
        self._clock = 0

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def fault(self, name: str) -> bool:
        with self.lock:
            n = self.faults.get(name, 0)
            if n > 0:
                self.faults[name] = n - 1
            return n > 0

    def new_commit(self, repo: Repo, parent: str | None, title: str,
                   files: dict[str, Blob]) -> Commit:
        with self.lock:
            self._clock += 1
            payload = json.dumps([parent, title, self._clock,
                                  sorted((p, b.oid) for p, b in files.items())])
            oid = hashlib.sha1(payload.encode()).hexdigest()
            date = (_dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc)
                    + _dt.timedelta(seconds=self._clock)).isoformat().replace("+00:00", ".000Z")
            c = Commit(oid, parent, title, files, date)
            repo.commits[oid] = c
            return c


class _Drop(Exception):
    """Close the connection without an answer (a network failure seen by the client)."""


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **body: object):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, fmt: str, *args: object) -> None:  # quiet
        pass

    # ---- plumbing --------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.state.requests.append(f"{method} {url.path}")
        try:
            for pattern, name in ROUTES:
                m = re.fullmatch(pattern, url.path)
                if m and hasattr(self, f"{name}_{method.lower()}"):
                    args = [unquote(g) for g in m.groups() if g is not None]
                    getattr(self, f"{name}_{method.lower()}")(*args)
                    return
            raise HubError(404, f"no route {method} {url.path}")
        except _Drop:
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
        except Exception as e:  # a bug in the stand-in: answer 500 and say it
            if not isinstance(e, HubError):
                import traceback

                traceback.print_exc()
                e = HubError(500, f"stand-in error: {e!r}")
            self._send_json({"error": e.message, **getattr(e, "body", {})}, e.status,
                            {"X-Error-Message": e.message, **({"X-Error-Code": e.code}
                                                               if e.code else {})})

    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _json_body(self) -> dict:
        raw = self._body()
        ctype = self.headers.get("Content-Type", "")
        if "x-www-form-urlencoded" in ctype:
            return {k: (v if k == "paths" else v[-1]) for k, v in parse_qs(raw.decode()).items()}
        return json.loads(raw or b"{}")

    def _send(self, body: bytes, status: int = 200, headers: dict | None = None,
              ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, obj: object, status: int = 200, headers: dict | None = None) -> None:
        self._send(json.dumps(obj).encode(), status, headers)

    # ---- auth and lookup -------------------------------------------------------------------
    def _user(self, required: bool = False) -> tuple[str, str] | None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token is None:
            if required:
                raise HubError(401, "You must be authenticated to access this resource")
            return None
        if token not in self.state.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.state.tokens[token]

    def _writer(self, repo_id: str) -> str:
        user, role = self._user(required=True)
        if role != "write" or repo_id.split("/")[0] != user:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return user

    def _repo(self, kind: str, repo_id: str, write: bool = False) -> Repo:
        repo = self.state.repo(TYPES.get(kind, kind), repo_id)
        who = self._writer(repo_id) if write else (self._user() or (None, None))[0]
        if repo is None or (repo.private and who != repo_id.split("/")[0]):
            raise HubError(401 if who is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit:
        oid = repo.resolve(rev)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.commits[oid]

    # ---- account and repos -----------------------------------------------------------------
    def whoami_get(self) -> None:
        user, role = self._user(required=True)
        self._send_json({"type": "user", "name": user, "orgs": [],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "standin", "role": role}}})

    def create_post(self) -> None:
        body = self._json_body()
        kind = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self._user(required=True)[0]}/{body['name']}"
        self._writer(repo_id)
        url = f"http://{self.headers['Host']}/{URL_PREFIX[kind]}{repo_id}"
        with self.state.lock:
            if self.state.repo(kind, repo_id) is not None:
                raise HubError(409, "You already created this repo", url=url)
            repo = Repo(kind, repo_id, body.get("visibility") == "private" or bool(body.get(
                "private")))
            init = self.state.new_commit(repo, None, "initial commit", {
                ".gitattributes": Blob(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", False)})
            repo.branches["main"] = init.oid
            self.state.repos[(kind, repo_id)] = repo
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml_post(self) -> None:
        self._json_body()
        self._send_json({"errors": [], "warnings": []})

    def info_get(self, kind: str, repo_id: str, rev: str | None = None) -> None:
        repo = self._repo(kind, repo_id)
        c = self._commit(repo, rev or "main")
        self._send_json({"id": repo_id, "author": repo_id.split("/")[0], "sha": c.oid,
                         "private": repo.private, "lastModified": c.date, "tags": [],
                         "siblings": [{"rfilename": p} for p in sorted(c.files)]})

    def refs_get(self, kind: str, repo_id: str) -> None:
        repo = self._repo(kind, repo_id)

        def refs(d: dict[str, str], prefix: str) -> list[dict]:
            return [{"name": n, "ref": prefix + n, "targetCommit": o} for n, o in d.items()]

        self._send_json({"branches": refs(repo.branches, "refs/heads/"),
                         "tags": refs(repo.tags, "refs/tags/"), "converts": [],
                         "pullRequests": []})

    def branch_post(self, kind: str, repo_id: str, name: str) -> None:
        repo = self._repo(kind, repo_id, write=True)
        start = self._json_body().get("startingPoint") or "main"
        with self.state.lock:
            if name in repo.branches:
                raise HubError(409, f"Branch {name} already exists")
            repo.branches[name] = self._commit(repo, start).oid
        self._send_json({})

    def tag_post(self, kind: str, repo_id: str, rev: str) -> None:
        repo = self._repo(kind, repo_id, write=True)
        tag = self._json_body()["tag"]
        if self.state.fault("tag"):
            raise _Drop
        with self.state.lock:
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = self._commit(repo, rev).oid
        self._send_json({})

    def commits_get(self, kind: str, repo_id: str, rev: str) -> None:
        repo = self._repo(kind, repo_id)
        c: Commit | None = self._commit(repo, rev)
        out = []
        while c is not None:
            out.append({"id": c.oid, "title": c.title, "message": "", "authors": [],
                        "date": c.date})
            c = repo.commits.get(c.parent) if c.parent else None
        self._send_json(out)

    # ---- listing -----------------------------------------------------------------------------
    @staticmethod
    def _entry(path: str, blob: Blob | None) -> dict:
        if blob is None:
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(),
                    "size": 0, "path": path}
        e = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
        if blob.lfs:
            e["lfs"] = {"oid": blob.sha256, "size": len(blob.data),
                        "pointerSize": len(lfs_pointer(blob.sha256, len(blob.data)))}
        return e

    def _entries(self, c: Commit, path: str, recursive: bool) -> list[dict]:
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        out: dict[str, dict] = {}
        for p, blob in sorted(c.files.items()):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if recursive or i == 1:
                    out.setdefault(d, self._entry(d, None))
            if recursive or len(parts) == 1:
                out[p] = self._entry(p, blob)
        return list(out.values())

    def tree_get(self, kind: str, repo_id: str, rev: str, path: str = "") -> None:
        c = self._commit(self._repo(kind, repo_id), rev)
        if path and path not in c.files and not any(p.startswith(path.strip("/") + "/")
                                                    for p in c.files):
            raise HubError(404, f"{path} does not exist", "EntryNotFound")
        self._send_json(self._entries(c, path, self.query.get("recursive") in ("True", "true")))

    def paths_info_post(self, kind: str, repo_id: str, rev: str) -> None:
        c = self._commit(self._repo(kind, repo_id), rev)
        paths = self._json_body().get("paths", [])
        out = []
        for p in paths:
            if p in c.files:
                out.append(self._entry(p, c.files[p]))
            elif any(q.startswith(p.strip("/") + "/") for q in c.files):
                out.append(self._entry(p.strip("/"), None))
        self._send_json(out)

    # ---- upload ------------------------------------------------------------------------------
    def preupload_post(self, kind: str, repo_id: str, rev: str) -> None:
        repo = self._repo(kind, repo_id, write=True)
        oid = repo.resolve(rev)
        files = repo.commits[oid].files if oid else {}
        out = []
        for f in self._json_body()["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = (f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_BYTES
                   or b"\0" in sample)
            old = files.get(f["path"])
            remote = None if old is None or old.lfs != lfs else (old.sha256 if lfs else old.oid)
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False, "oid": remote})
        self._send_json({"files": out, "commitOid": oid})

    def lfs_batch_post(self, prefix: str, repo_id: str) -> None:
        kind = TYPES.get(prefix.rstrip("/"), "model")
        repo = self._repo(kind, repo_id, write=True)
        base = f"http://{self.headers['Host']}"
        objects = []
        for o in self._json_body()["objects"]:
            obj = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in repo.lfs:
                where = f"{kind}/{repo_id}/{o['oid']}"
                obj["actions"] = {
                    "upload": {"href": f"{base}/lfs-upload/{where}?size={o['size']}"},
                    "verify": {"href": f"{base}/lfs-verify/{where}"}}
            objects.append(obj)
        self._send(json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   ctype="application/vnd.git-lfs+json")

    def lfs_upload_put(self, kind: str, repo_id: str, oid: str) -> None:
        # Like the Hub's pre-signed storage URLs: the href is the authorisation (no token).
        repo = self.state.repo(kind, repo_id)
        if repo is None:
            raise HubError(404, "no such upload")
        n = int(self.headers.get("Content-Length") or 0)
        if self.state.fault("lfs-upload"):
            self.rfile.read(n // 2)
            raise _Drop
        data = self.rfile.read(n)
        if hashlib.sha256(data).hexdigest() != oid or len(data) != int(self.query["size"]):
            raise HubError(400, "uploaded content does not match its oid and size")
        repo.lfs[oid] = data
        self._send(b"", ctype="text/plain")

    def lfs_verify_post(self, kind: str, repo_id: str, oid: str) -> None:
        self._json_body()
        if oid not in self._repo(kind, repo_id).lfs:
            raise HubError(404, f"object {oid} was not uploaded")
        self._send_json({})

    def commit_post(self, kind: str, repo_id: str, rev: str) -> None:
        repo = self._repo(kind, repo_id, write=True)
        lines = [json.loads(x) for x in self._body().splitlines() if x.strip()]
        if self.state.fault("commit"):
            raise _Drop
        with self.state.lock:
            head = self._commit(repo, rev)
            if unquote(rev) not in repo.branches:
                raise HubError(400, f"{rev} is not a branch", "RevisionNotFound")
            header = lines[0]["value"]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for item in lines[1:]:
                key, v = item["key"], item["value"]
                if key == "file":
                    files[v["path"]] = Blob(base64.b64decode(v["content"]), False)
                elif key == "lfsFile":
                    if v["oid"] not in repo.lfs:
                        raise HubError(422, f"LFS object {v['oid']} for {v['path']} is missing")
                    files[v["path"]] = Blob(repo.lfs[v["oid"]], True)
                elif key == "deletedFile":
                    if files.pop(v["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist",
                                       "EntryNotFound")
                elif key == "deletedFolder":
                    for p in [p for p in files if p.startswith(v["path"].rstrip("/") + "/")]:
                        del files[p]
            c = self.state.new_commit(repo, head.oid, header["summary"], files)
            repo.branches[unquote(rev)] = c.oid
        host = f"http://{self.headers['Host']}/{URL_PREFIX[repo.repo_type]}{repo_id}"
        self._send_json({"commitUrl": f"{host}/commit/{c.oid}", "commitOid": c.oid,
                         "success": True})

    # ---- download ----------------------------------------------------------------------------
    def resolve_get(self, prefix: str, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(TYPES.get(prefix.rstrip("/"), "model"), repo_id)
        c = self._commit(repo, rev)
        blob = c.files.get(path)
        if blob is None:
            raise HubError(404, f"{path} does not exist at {rev}", "EntryNotFound")
        data, status = blob.data, 200
        headers = {"X-Repo-Commit": c.oid, "Accept-Ranges": "bytes",
                   "ETag": f'"{blob.sha256 if blob.lfs else blob.oid}"'}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": len(data)})
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if m:
            size = len(data)
            a = int(m.group(1)) if m.group(1) else size - int(m.group(2))
            b = int(m.group(2)) if m.group(1) and m.group(2) else size - 1
            if a >= size:
                raise HubError(416, "Requested range not satisfiable")
            data, status = data[a:b + 1], 206
            headers["Content-Range"] = f"bytes {a}-{min(b, size - 1)}/{size}"
        self._send(data, status, headers, "application/octet-stream")

    resolve_head = resolve_get


_REPO = r"([\w.-]+/[\w.-]+)"
_KIND = r"/api/(models|datasets|spaces)/" + _REPO
ROUTES: list[tuple[str, str]] = [
    (r"/api/whoami-v2", "whoami"),
    (r"/api/repos/create", "create"),
    (r"/api/validate-yaml", "validate_yaml"),
    (_KIND + r"/refs", "refs"),
    (_KIND + r"/branch/([^/]+)", "branch"),
    (_KIND + r"/tag/([^/]+)", "tag"),
    (_KIND + r"/commits/([^/]+)", "commits"),
    (_KIND + r"/tree/([^/]+)(?:/(.+))?", "tree"),
    (_KIND + r"/paths-info/([^/]+)", "paths_info"),
    (_KIND + r"/preupload/([^/]+)", "preupload"),
    (_KIND + r"/commit/([^/]+)", "commit"),
    (_KIND + r"(?:/revision/([^/]+))?", "info"),
    (r"/((?:datasets/|spaces/)?)" + _REPO + r"\.git/info/lfs/objects/batch", "lfs_batch"),
    (r"/lfs-upload/(model|dataset|space)/" + _REPO + r"/([0-9a-f]{64})", "lfs_upload"),
    (r"/lfs-verify/(model|dataset|space)/" + _REPO + r"/([0-9a-f]{64})", "lfs_verify"),
    (r"/((?:datasets/|spaces/)?)" + _REPO + r"/resolve/([^/]+)/(.+)", "resolve"),
]


class HubServer(ThreadingHTTPServer):
    """The stand-in, serving from a thread: ``with HubServer(tokens) as hub: hub.url``."""

    daemon_threads = True

    def __init__(self, tokens: dict[str, tuple[str, str]], port: int = 0):
        super().__init__(("127.0.0.1", port), Handler)
        self.state = HubState(tokens)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-standin",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    # helpers for tests
    def files(self, repo_type: str, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        repo = self.state.repo(repo_type, repo_id)
        oid = repo.resolve(rev) if repo else None
        return {} if oid is None else {p: b.data for p, b in repo.commits[oid].files.items()}

    def commit_count(self, repo_type: str, repo_id: str) -> int:
        repo = self.state.repo(repo_type, repo_id)
        return 0 if repo is None else len(repo.commits)


def main() -> None:  # pragma: no cover - manual use
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", action="append", default=[], metavar="TOKEN:USER:ROLE")
    args = p.parse_args()
    tokens = {t: (u, r) for t, u, r in (x.split(":") for x in args.token)}
    server = HubServer(tokens, args.port)
    print(f"Hub stand-in at {server.url} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":  # pragma: no cover
    main()
