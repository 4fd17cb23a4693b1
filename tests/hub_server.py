"""A tiny Hugging Face Hub look-alike for tests, written with the standard library only.

`FakeHub(folder)` serves model repos over HTTP on 127.0.0.1 (free port) from a background thread. It implements just
the endpoints that `huggingface_hub` (and, through it, `transformers`) calls to create a repo and a branch, upload a
folder, read repo info and file trees, and download files. Every file is uploaded "regular" (base64 in the commit
payload), so no LFS or Xet transfer is ever needed, and no Xet header is ever sent back, so downloads stay plain HTTP.

Storage: file contents live in `folder/blobs/<git-sha1>`; each repo is a dict of commits (commit sha -> {path: blob
sha}) plus branches (name -> commit sha). Commits are immutable: every commit makes a new revision.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# /api/models/{namespace}/{name}[/{action}/{revision}[/{path}]]: the JSON API of one model repo.
API_REPO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree|preupload|commit|branch)/([^/]+)(?:/(.*))?)?$")
# /{namespace}/{name}/resolve/{revision}/{path}: raw file download (revision is URL-quoted, so it has no slash).
RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def git_blob_sha(data: bytes) -> str:
    """The git object id of a file, which the Hub uses as ETag and `oid` for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answer: status, optional `X-Error-Code` (huggingface_hub maps it to an exception class), message."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.commit, self.body = status, code, commit, body or {}


class FakeHub:
    def __init__(self, folder: str | Path):
        self.blobs = Path(folder) / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, dict] = {}  # repo_id -> {"private", "branches": {name: sha}, "commits": {sha: {...}}}
        self.requests: list[str] = []  # "METHOD path" of every request, for debugging
        self.unhandled: list[str] = []  # requests no endpoint matched (answered 404)
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-hub", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # ------------------------------------------------------------------ storage helpers

    def repo(self, repo_id: str, authorized: bool = True) -> dict:
        repo = self.repos.get(repo_id)
        if repo is None or (repo["private"] and not authorized):  # the Hub hides private repos from anonymous users
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def resolve(self, repo: dict, revision: str) -> str:
        """A branch name or a (full) commit sha -> commit sha."""
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def commit(self, repo_id: str, branch: str, files: dict[str, str], message: str) -> str:
        repo = self.repos[repo_id]
        parent = repo["branches"].get(branch)
        seed = f"{repo_id}\n{parent}\n{message}\n{time.time_ns()}\n{json.dumps(files, sort_keys=True)}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo["commits"][sha] = {"files": files, "parent": parent, "message": message, "date": time.time()}
        repo["branches"][branch] = sha
        return sha

    def read_blob(self, oid: str) -> bytes:
        return (self.blobs / oid).read_bytes()

    def write_blob(self, data: bytes) -> str:
        oid = git_blob_sha(data)
        (self.blobs / oid).write_bytes(data)
        return oid

    # ------------------------------------------------------------------ endpoints

    def handle(self, method: str, path: str, query: dict, body: bytes, authorized: bool) -> tuple[int, dict, object]:
        """Route one request; returns (status, extra headers, JSON-able body or raw bytes)."""
        if path == "/api/whoami-v2" and method == "GET":  # HfApi.whoami: any token is a valid "write" token
            if not authorized:
                raise HubError(401, "Invalid credentials in Authorization header")
            return 200, {}, {"type": "user", "name": "test-user", "fullname": "Test User", "orgs": [],
                             "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}

        if path == "/api/validate-yaml" and method == "POST":  # upload_folder checks a README.md's metadata block
            content = json.loads(body or b"{}").get("content", "")
            if not content.startswith("---"):
                raise HubError(400, "README.md has no metadata block")
            return 200, {}, {"errors": [], "warnings": []}

        if path == "/api/agent-harnesses":  # huggingface_hub's optional agent-detection registry: there is none
            raise HubError(404, "no agent registry on the fake Hub")

        if path == "/api/repos/create" and method == "POST":  # HfApi.create_repo
            payload = json.loads(body or b"{}")
            if payload.get("type", "model") != "model":
                raise HubError(400, "this fake Hub only hosts model repos")
            repo_id = f"{payload.get('organization') or 'test-user'}/{payload['name']}"
            url = f"{self.endpoint}/{repo_id}"
            if repo_id in self.repos:  # create_repo(exist_ok=True) swallows the 409 but still reads "url"
                raise HubError(409, "You already created this model repo", body={"url": url})
            self.repos[repo_id] = {"private": payload.get("visibility") == "private", "branches": {}, "commits": {}}
            self.commit(repo_id, "main", {}, "initial commit")
            return 200, {}, {"url": url, "name": repo_id, "id": repo_id}

        if match := API_REPO.match(path):
            repo_id, action, revision, rest = match.groups()
            repo_id, revision = unquote(repo_id), unquote(revision) if revision else "main"
            repo = self.repo(repo_id, authorized)

            if action == "branch" and method == "POST":  # HfApi.create_branch: new branch at startingPoint or main
                if revision in repo["branches"]:
                    raise HubError(409, f"Branch {revision} already exists")
                start = json.loads(body or b"{}").get("startingPoint") or "main"
                repo["branches"][revision] = self.resolve(repo, start)
                return 200, {}, {}

            sha = self.resolve(repo, revision)
            files = repo["commits"][sha]["files"]

            if action in (None, "revision") and method == "GET":  # HfApi.model_info / repo_info
                modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo["commits"][sha]["date"]))
                return 200, {}, {
                    "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": sha,
                    "private": repo["private"], "gated": False, "disabled": False, "tags": [], "downloads": 0,
                    "likes": 0, "lastModified": modified,
                    "siblings": [{"rfilename": name} for name in sorted(files)],
                }

            if action == "tree" and method == "GET":  # HfApi.list_repo_tree / list_repo_files (snapshot_download)
                prefix = (unquote(rest).strip("/") + "/") if rest else ""
                recursive = query.get("recursive", ["False"])[0].lower() in ("1", "true")
                entries, folders = [], set()
                for name in sorted(files):
                    if not name.startswith(prefix):
                        continue
                    tail = name[len(prefix):]
                    if "/" in tail and not recursive:
                        folders.add(prefix + tail.split("/")[0])
                        continue
                    if recursive:  # recursive listings also name every folder on the way
                        parts = tail.split("/")[:-1]
                        folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
                    data = self.read_blob(files[name])
                    entries.append({"type": "file", "path": name, "oid": files[name], "size": len(data)})
                entries += [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()}
                            for f in sorted(folders)]
                if prefix and not entries:  # like the Hub: listing a folder that does not exist is a 404
                    raise HubError(404, f"{prefix} does not exist on {revision}", "EntryNotFound", commit=sha)
                return 200, {}, entries

            if action == "preupload" and method == "POST":  # upload mode per file: always "regular", never LFS/Xet
                return 200, {}, {"commitOid": sha, "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
                    for f in json.loads(body)["files"]
                ]}

            if action == "commit" and method == "POST":  # HfApi.create_commit: NDJSON, base64 file contents
                if query.get("create_pr"):
                    raise HubError(400, "pull requests are not supported by this fake Hub")
                if revision not in repo["branches"]:
                    raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                new_files, message = dict(files), ""
                for line in body.splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    key, value = item["key"], item["value"]
                    if key == "header":
                        message = value.get("summary", "")
                        if value.get("parentCommit") not in (None, sha):
                            raise HubError(412, "parentCommit is not the head of the branch")
                    elif key == "file":
                        new_files[value["path"]] = self.write_blob(base64.b64decode(value["content"]))
                    elif key == "deletedFile":
                        if new_files.pop(value["path"], None) is None:
                            raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    elif key == "deletedFolder":
                        folder = value["path"].rstrip("/") + "/"
                        new_files = {k: v for k, v in new_files.items() if not k.startswith(folder)}
                    else:  # lfsFile: never requested, since preupload answers "regular" for every file
                        raise HubError(400, f"unsupported commit operation {key!r}")
                oid = self.commit(repo_id, revision, new_files, message)
                url = f"{self.endpoint}/{repo_id}/commit/{oid}"
                return 200, {}, {"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None}

        if (match := RESOLVE.match(path)) and method in ("GET", "HEAD"):  # hf_hub_download: HEAD for metadata, GET
            repo_id, revision, filename = (unquote(group) for group in match.groups())
            repo = self.repo(repo_id, authorized)
            sha = self.resolve(repo, revision)
            oid = repo["commits"][sha]["files"].get(filename)
            if oid is None:  # EntryNotFound + X-Repo-Commit: huggingface_hub caches the miss in `.no_exist/<sha>/`
                raise HubError(404, f"Entry not found: {filename}", "EntryNotFound", commit=sha)
            data = self.read_blob(oid)
            # ETag = git blob sha (what the Hub sends for non-LFS files); X-Repo-Commit = resolved commit sha.
            return 200, {"ETag": f'"{oid}"', "X-Repo-Commit": sha, "Content-Type": "application/octet-stream"}, data

        self.unhandled.append(f"{method} {path}")
        raise HubError(404, f"no such endpoint in the fake Hub: {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    hub: FakeHub

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        authorized = self.headers.get("Authorization", "").startswith("Bearer ")
        self.hub.requests.append(f"{self.command} {url.path}")
        try:
            with self.hub.lock:  # one request at a time: the repo dicts are shared between handler threads
                status, headers, payload = self.hub.handle(self.command, url.path, parse_qs(url.query), body,
                                                           authorized)
        except HubError as err:
            status, payload = err.status, {"error": str(err), **err.body}
            headers = {"X-Error-Message": str(err)}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format, *args):  # quiet: the request list is kept in `hub.requests`
        pass
