"""The real daemon for end-to-end tests: `pixdex serve` as a subprocess on temporary roots and XDG
folders, with the stand-in models, talked to over its Unix socket and loopback TCP."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from conftest import PIXDEX, write_config

from pixdex.daemon.client import Client, DaemonError, UnixConnection


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    started: ClassVar[list[Served]] = []  # every daemon a test started: `stop_all` ends those a test left running

    def __init__(self, root: Path, model_dir: Path | None, folders: list[Path], extra: str = "",
                 environ: dict[str, str] | None = None, nofile: int | None = None) -> None:
        self.root = root
        self.nofile = nofile  # the daemon's open-file limit, soft and hard (None: inherited)
        self.port = free_port()
        self.config = root / "config" / "pixdex" / "config.toml"
        self.folders = folders
        self.model_dir = model_dir or root / "no-models"
        self.extra = extra
        self.watch_extra = ""  # more [watch] settings
        self.write_config()
        self.environ = dict(environ or os.environ)
        for key, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"),
                         ("XDG_STATE_HOME", "state"), ("XDG_RUNTIME_DIR", "run")):
            self.environ[key] = str(root / sub)
        (root / "run").mkdir(mode=0o700, exist_ok=True)
        self.environ.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "serve.log"
        self.command = [str(PIXDEX)]  # how `pixdex` is started (a test may run another copy of it)

    def write_config(self, extra: str | None = None) -> None:
        if extra is not None:
            self.extra = extra
        write_config(self.config, self.model_dir, self.folders,
                     "[watch]\ndebounce = 0.1\nsettle = 0.5\nreconcile = 0\n" + self.watch_extra +
                     f"[server]\nport = {self.port}\n" + self.extra)

    @property
    def socket_path(self) -> Path:
        return self.root / "run" / "pixdex" / "pixdex.sock"

    @property
    def data(self) -> Path:
        return self.root / "data" / "pixdex"

    def start(self, wait: bool = True) -> Served:
        handle = open(self.log, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen([*self.command, "--config", str(self.config), "serve"], env=self.environ,
                                     stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=self._limit_files if self.nofile else None)
        handle.close()
        Served.started.append(self)
        if wait:
            self.wait_ready()
        return self

    def _limit_files(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            client = Client.connect(self.socket_path)
            if client is not None:
                try:
                    if client.get("/health")["ok"]:
                        return
                except Exception:  # noqa: BLE001 - not ready yet, whatever the reason: the log says after the wait
                    pass
            time.sleep(0.1)
        raise AssertionError(f"the daemon did not become ready:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # both processes write every thread's stack to the log
                time.sleep(3)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError(f"the daemon did not stop on SIGTERM; its log:\n{self.log.read_text()[-12000:]}") \
                    from None
        return self.proc.returncode

    @classmethod
    def stop_all(cls) -> None:
        for daemon in cls.started:
            if daemon.proc is not None and daemon.proc.poll() is None:
                os.killpg(daemon.proc.pid, signal.SIGKILL)
                daemon.proc.wait()
        cls.started.clear()

    def kill9(self) -> None:
        """SIGKILL the daemon and every worker it started (its process group)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    # Talking to it ----------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        return Client(self.socket_path, timeout=60)

    def get(self, route: str, **params: Any) -> Any:
        return self.client.get(route, **params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(path, body)

    def status(self) -> dict[str, Any]:
        return dict(self.get("/status"))

    def listed(self, folder: Path | None = None) -> dict[str, int]:
        """path → id of every item under `folder` (default: the first root), from the text index."""
        hits = self.get("/search", q=f'folder:"{folder or self.folders[0]}"', k=10000)["hits"]
        return {h["path"]: h["id"] for h in hits}

    def idle(self) -> bool:
        status = self.status()
        return (sum(status["queue"].values()) == 0 and not status["progress"]["scanning"]
                and status["progress"]["dirty_folders"] == 0 and status["progress"]["in_flight"] == 0)

    def raw(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
            tcp: bool = False) -> tuple[int, dict[str, Any] | bytes]:
        """One request with exactly these headers (no Host added), over the socket or TCP."""
        if tcp:
            connection: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        else:
            connection = UnixConnection(str(self.socket_path))
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in (headers or {}).items():
                connection.putheader(key, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            # the server may answer and close before the whole body was sent (413): read its answer
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.endheaders(body)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(payload)
        return response.status, payload

    def token(self) -> str:
        tokens = json.loads((self.root / "state" / "pixdex" / "tokens.json").read_text())
        return str(tokens["tokens"][0]["token"])


async def sse_events(response: Any) -> Any:
    """(kind, data) of each Server-Sent Event an aiohttp response streams."""
    kind = ""
    async for line in response.content:
        text = line.decode().strip()
        if text.startswith("event: "):
            kind = text[7:]
        elif text.startswith("data: "):
            yield kind, json.loads(text[6:])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; returns its value. Fails with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (DaemonError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def quote(path: Path) -> str:
    return urllib.parse.quote(str(path))
