"""A local stand-in for the Hugging Face Hub, so tests drive the real huggingface_hub client offline.

It serves what the client requests, the way the Hub does (huggingface_hub 2.x):

- ``GET /api/models/{repo}[/revision/{rev}]`` (``model_info``): sha and siblings, with LFS sha256/size
  when ``?blobs=true``; ``GET /api/models?filter=...`` (``list_models``).
- ``HEAD|GET /{repo}/resolve/{rev}/{file}``: small files directly (``ETag`` = git blob sha1); LFS files
  (``*.safetensors``, ``*.bin``) with a 302 to a second server on another port (a different origin, like
  the Hub's CDN) and ``X-Linked-Etag`` (sha256) / ``X-Linked-Size``. Every answer carries ``X-Repo-Commit``.
- Errors with the Hub's ``X-Error-Code`` header: RepoNotFound (404, or 401 for private repos),
  GatedRepo (401 on files of gated repos), RevisionNotFound, EntryNotFound.
- The CDN honours ``Range: bytes=N-`` (the client resumes interrupted transfers with it).

Faults for failure tests: ``truncate_at[file] = n`` closes the connection after byte ``n`` of the file
(every attempt, so resuming cannot finish it; ``truncate_once`` only the first),
``advertised_size[file]`` lies in ``X-Linked-Size``, ``corrupt`` serves other bytes of the same length,
``status[file]`` answers that HTTP status.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    commit: str
    revisions: tuple[str, ...] = ("main",)  # branch / tag names that point at ``commit``
    access: str = "public"  # public, private or gated
    tags: tuple[str, ...] = ()

    def sibling(self, name: str, blobs: bool) -> dict:
        data = self.files[name]
        entry: dict = {"rfilename": name}
        if blobs:
            entry.update(size=len(data), blobId=git_blob_sha1(data))
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    truncate_at: dict[str, int] = field(default_factory=dict)
    truncate_once: dict[str, int] = field(default_factory=dict)  # like truncate_at, on the first transfer only
    advertised_size: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    status: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)  # Range headers the CDN received
    endpoint: str = ""
    cdn: str = ""

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, access: str = "public", tags: tuple[str, ...] = (),
                 revisions: tuple[str, ...] = ("main",)) -> str:
        digest = hashlib.sha1(repo_id.encode() + b"".join(sorted(files.values()))).hexdigest()
        self.repos[repo_id] = FakeRepo(repo_id, dict(files), digest, revisions, access, tags)
        return digest

    def blob(self, sha256: str) -> tuple[str, bytes] | None:
        for repo in self.repos.values():
            for name, data in repo.files.items():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return name, data
        return None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> str:
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, cdn=flag)) for flag in (False, True)]
        for server in self._servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self.endpoint

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


def closed_port_endpoint() -> str:
    """An http://127.0.0.1 address where nothing listens: connections are refused, like no network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _handler(hub: FakeHub, cdn: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
            pass

        # -- helpers --------------------------------------------------------------------------------------------

        def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                 send_body: bool = True) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body and body:
                self.wfile.write(body)

        def error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
            headers = {"Content-Type": "application/json", **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            headers["X-Error-Message"] = message
            self.send(status, json.dumps({"error": message}).encode(), headers, self.command != "HEAD")

        def find_repo(self, repo_id: str, for_files: bool) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self.error(404, "RepoNotFound", "Repository not found")
            elif repo.access == "private" and "authorization" not in {k.lower() for k in self.headers}:
                self.error(401, "RepoNotFound", "Invalid username or password.")
            elif repo.access == "gated" and for_files:
                self.error(401, "GatedRepo", "Access to this model is restricted.")
            else:
                return repo
            return None

        # -- routes ---------------------------------------------------------------------------------------------

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self.route()

        def do_GET(self) -> None:  # noqa: N802
            self.route()

        def route(self) -> None:
            url = urlsplit(self.path)
            hub.requests.append((self.command, url.path))
            parts = [unquote(part) for part in url.path.strip("/").split("/")] if url.path.strip("/") else []
            if cdn:
                return self.serve_blob(parts)
            if not parts:
                return self.send(200, b"fake hub", {"Content-Type": "text/plain"}, self.command != "HEAD")
            if parts[:2] == ["api", "models"]:
                return self.serve_api(parts[2:], parse_qs(url.query))
            if len(parts) >= 5 and parts[2] == "resolve":
                return self.serve_resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            self.error(404, None, "not found")

        def serve_api(self, rest: list[str], query: dict[str, list[str]]) -> None:
            if not rest:
                wanted = set(query.get("filter", []))
                limit = int(query.get("limit", ["1000"])[0])
                models = [{"id": repo.repo_id, "modelId": repo.repo_id, "downloads": 7, "likes": 1,
                           "lastModified": "2025-06-01T12:00:00.000Z", "tags": list(repo.tags), "private": False,
                           "library_name": "dfpir" if "dfpir" in repo.tags else None}
                          for repo in hub.repos.values()
                          if repo.access != "private" and wanted <= set(repo.tags)][:limit]
                return self.send(200, json.dumps(models).encode(), {"Content-Type": "application/json"})
            repo_id = "/".join(rest[:2])
            revision = rest[3] if len(rest) >= 4 and rest[2] == "revision" else "main"
            repo = self.find_repo(repo_id, for_files=False)
            if repo is None:
                return
            if revision not in repo.revisions and revision != repo.commit:
                return self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            info = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": repo.access == "private",
                    "gated": "auto" if repo.access == "gated" else False, "tags": list(repo.tags),
                    "library_name": "dfpir" if "dfpir" in repo.tags else None, "downloads": 7, "likes": 1,
                    "lastModified": "2025-06-01T12:00:00.000Z",
                    "siblings": [repo.sibling(name, blobs) for name in sorted(repo.files)]}
            self.send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

        def serve_resolve(self, repo_id: str, revision: str, filename: str) -> None:
            repo = self.find_repo(repo_id, for_files=True)
            if repo is None:
                return
            if revision not in repo.revisions and revision != repo.commit:
                return self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            commit = {"X-Repo-Commit": repo.commit}
            if filename in hub.status:
                return self.error(hub.status[filename], None, "injected failure", commit)
            if filename not in repo.files:
                return self.error(404, "EntryNotFound", f"{filename} does not exist", commit)
            data = repo.files[filename]
            if filename.endswith(LFS_SUFFIXES):
                sha256 = hashlib.sha256(data).hexdigest()
                size = hub.advertised_size.get(filename, len(data))
                return self.send(302, b"", {**commit, "Location": f"{hub.cdn}/blobs/{sha256}",
                                            "ETag": f'"{git_blob_sha1(data)}"', "X-Linked-Etag": f'"{sha256}"',
                                            "X-Linked-Size": str(size)})
            self.send(200, data, {**commit, "ETag": f'"{git_blob_sha1(data)}"',
                                  "Content-Type": "application/octet-stream"}, self.command != "HEAD")

        def serve_blob(self, parts: list[str]) -> None:
            found = hub.blob(parts[1]) if len(parts) == 2 and parts[0] == "blobs" else None
            if found is None:
                return self.error(404, None, "no such blob")
            name, data = found
            if name in hub.corrupt:
                data = bytes(255 - byte for byte in data)
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
            body = data[start:]
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body)),
                       "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if self.command == "HEAD":
                return self.send(status, b"", headers, send_body=False)
            if ranged:
                hub.ranges.append(ranged)
            cut = hub.truncate_at.get(name, hub.truncate_once.pop(name, None))
            if cut is not None and start + len(body) > cut:
                self.send(status, b"", headers, send_body=False)
                self.wfile.write(body[: max(cut - start, 0)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send(status, body, headers)

    return Handler


def point_client_at(monkeypatch, endpoint: str, home) -> None:
    """Aim huggingface_hub at ``endpoint`` with its cache and token under ``home``.

    huggingface_hub reads its environment once, at import, into ``huggingface_hub.constants``: the
    environment is set for subprocesses and the constants for this process.
    """
    from huggingface_hub import constants

    home = str(home)
    for name, value in {"HF_ENDPOINT": endpoint, "HF_HOME": home, "HF_HUB_CACHE": f"{home}/hub",
                        "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "DFPIR_CLIP_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"ENDPOINT": endpoint,
                        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_HOME": home, "HF_HUB_CACHE": f"{home}/hub", "HF_TOKEN_PATH": f"{home}/token",
                        "HF_STORED_TOKENS_PATH": f"{home}/stored_tokens", "HF_HUB_OFFLINE": False,
                        "HF_HUB_DISABLE_XET": True}.items():
        monkeypatch.setattr(constants, name, value)


def set_offline(monkeypatch, offline: bool = True) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")


class RecordingApi:
    """Stands in for HfApi's upload calls only (create_repo, create_branch, create_commit).

    A commit lands in the fake Hub as a repository, so a test can fetch what it pushed.
    """

    def __init__(self, fake: FakeHub) -> None:
        self.fake, self.calls = fake, []

    def install(self, monkeypatch) -> None:
        from huggingface_hub import HfApi

        for name in ("create_repo", "create_branch", "create_commit"):
            monkeypatch.setattr(HfApi, name, getattr(self, name))

    def create_repo(self, repo_id, private=False, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, private))
        return f"{self.fake.endpoint}/{repo_id}"

    def create_branch(self, repo_id, branch, exist_ok=False, **kwargs):
        self.calls.append(("create_branch", repo_id, branch))

    def create_commit(self, repo_id, operations, revision=None, commit_message=None, **kwargs):
        files = {}
        for operation in operations:
            source = operation.path_or_fileobj
            files[operation.path_in_repo] = Path(source).read_bytes() if isinstance(source, str) else bytes(source)
        self.calls.append(("create_commit", repo_id, revision, commit_message))
        commit = self.fake.add_repo(repo_id, files, tags=("dfpir",), revisions=("main", revision or "main"))

        class Info:
            commit_url = f"{self.fake.endpoint}/{repo_id}/commit/{commit}"

        return Info()
