"""A local stand-in for the Hugging Face hub's file API, enough for `huggingface_hub` to list a repo and
download its files (`HF_ENDPOINT` points at it). Not a mock of huggingface_hub: the real client talks
HTTP to this server.

Routes (as huggingface.co answers them):
  GET  /api/models/{org}/{name}/revision/{rev}         repo info: id, sha, siblings
  GET  /api/models/{org}/{name}/tree/{rev}[/{path}]    file list: type, path, size, oid (+ lfs for big files)
  HEAD /{org}/{name}/resolve/{rev}/{path}              ETag (sha256 for LFS files, git blob sha1 otherwise),
  GET  /{org}/{name}/resolve/{rev}/{path}              X-Repo-Commit, Content-Length; GET honours Range

Repos are folders: `repos[org/name] = Path`. Files of `LFS_FROM` bytes or more are served as LFS files.
`corrupt` names files whose bytes are changed in transit (same size): the client's checksum check must
catch them. `fail_after` cuts a GET after that many bytes once per file (a dropped connection);
`chunk_delay` slows every download down.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

LFS_FROM = 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}
        self.commits: dict[str, str] = {}
        self.corrupt: set[str] = set()
        self.fail_after: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.down = False  # answer 503 to everything (a hub that is unreachable)
        self.chunk_delay = 0.0  # seconds between 64 KiB chunks (a slow connection)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add(self, repo: str, folder: Path) -> str:
        self.repos[repo] = folder
        digest = hashlib.sha1()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
        self.commits[repo] = digest.hexdigest()
        return self.commits[repo]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Serving ----------------------------------------------------------------------------------
    def start(self) -> Hub:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True, name="hub").start()
        ready.wait(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self.info)
        app.router.add_get("/api/models/{org}/{name}/tree/{rev}", self.tree)
        app.router.add_get("/api/models/{org}/{name}/tree/{rev}/{path:.*}", self.tree)
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.*}", self.resolve)
        app.middlewares.append(self.log)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    @web.middleware
    async def log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.down:
            raise web.HTTPServiceUnavailable(text="the stand-in hub is down")
        response: web.StreamResponse = await handler(request)
        return response

    def _repo(self, request: web.Request) -> tuple[str, Path]:
        repo = f"{request.match_info['org']}/{request.match_info['name']}"
        if repo not in self.repos:
            raise web.HTTPNotFound(text=f"Repository {repo} not found",
                                   headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        rev = request.match_info["rev"]
        if rev not in ("main", self.commits[repo]):
            raise web.HTTPNotFound(text=f"Revision {rev} not found",
                                   headers={"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
        return repo, self.repos[repo]

    def _files(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def _entry(self, folder: Path, path: Path) -> dict[str, Any]:
        data = path.read_bytes()
        entry: dict[str, Any] = {"type": "file", "path": str(path.relative_to(folder)), "size": len(data),
                                 "oid": git_blob_sha1(data)}
        if len(data) >= LFS_FROM:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    async def info(self, request: web.Request) -> web.Response:
        repo, folder = self._repo(request)
        return web.json_response({"id": repo, "modelId": repo, "sha": self.commits[repo], "private": False,
                                  "siblings": [{"rfilename": str(p.relative_to(folder))} for p in self._files(folder)]})

    async def tree(self, request: web.Request) -> web.Response:
        _, folder = self._repo(request)
        under = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "false").lower() == "true"
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for path in self._files(folder):
            rel = str(path.relative_to(folder))
            if under and not rel.startswith(under + "/"):
                continue
            rest = rel[len(under) + 1:] if under else rel
            if "/" in rest and not recursive:
                dirs.add(rel[:len(rel) - len(rest)] + rest.split("/")[0])
                continue
            entries.append(self._entry(folder, path))
        entries += [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in sorted(dirs)]
        return web.json_response(entries)

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        repo, folder = self._repo(request)
        rel = request.match_info["path"]
        path = folder / rel
        if not path.is_file() or ".." in Path(rel).parts:
            raise web.HTTPNotFound(text="Entry not found",
                                   headers={"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
        data = path.read_bytes()
        entry = self._entry(folder, path)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": self.commits[repo], "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if "lfs" in entry:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(data))
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        if rel in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        if request.http_range.start is not None:
            start = request.http_range.start
        body = data[start:]
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers["Content-Length"] = str(len(body))
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        cut = self.fail_after.pop(rel, None)
        if cut is not None:
            await response.write(body[:cut])
            request.transport.close()  # type: ignore[union-attr]
            return response
        for offset in range(0, len(body), 64 * 1024):
            await response.write(body[offset:offset + 64 * 1024])
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await response.write_eof()
        return response
