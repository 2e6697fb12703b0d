"""The CLI's side of the socket: a small HTTP client over the daemon's Unix socket (stdlib only).

It stays light on purpose — a desktop search box may run `pixdex search` on every keystroke:
no numpy, no onnxruntime, no index opened. `connect` returns None when no daemon answers, and
the CLI then works on the data directory itself.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import stat
import urllib.parse
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import PixdexError, ReadError
from pixdex.indexer.paths import as_text


class DaemonError(PixdexError):
    """The daemon refused a request: its message names the parameter and what is allowed."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error") or f"HTTP {status}"))
        self.status = status
        self.body = body


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the daemon's Unix socket (the tests' and benchmarks' raw requests use it too)."""

    def __init__(self, path: str, timeout: float | None = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, socket_path: Path, timeout: float = 300.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    @classmethod
    def connect(cls, socket_path: Path, data_dir: Path | None = None) -> Client | None:
        """A client when a daemon answers on `socket_path`, else None (a stale socket counts as none). With
        `data_dir`, only a daemon that serves that data directory counts: another library's daemon on the same
        socket (another config, one `XDG_RUNTIME_DIR`) is none of this command's business."""
        if not socket_path.exists():
            return None
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(str(socket_path))
        except OSError:
            return None
        finally:
            probe.close()
        client = cls(socket_path)
        if data_dir is not None and not client.serves(data_dir):
            return None
        return client

    def serves(self, data_dir: Path) -> bool:
        """Whether the daemon serves `data_dir` (one that does not say, from before it did, is taken at its word)."""
        try:
            served = Client(self.socket_path, timeout=10.0).get("/health", brief="1").get("data_dir")
        except (DaemonError, OSError):
            return False
        return served is None or os.path.realpath(served) == os.path.realpath(data_dir)

    def request(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json") -> Any:
        query = urllib.parse.urlencode({k: as_text(v) if isinstance(v, str) else v
                                        for k, v in (params or {}).items() if v is not None}, doseq=True)
        data: bytes | None = None
        headers = {"Host": "localhost"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        connection = UnixConnection(str(self.socket_path), self.timeout)
        try:
            connection.request(method, path + (f"?{query}" if query else ""), body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError as exc:
            raise PixdexError(f"{self.socket_path}: the daemon stopped answering ({exc}); `pixdex status` "
                              "tells whether it runs") from exc
        finally:
            connection.close()
        parsed = json.loads(payload) if payload and response.getheader("Content-Type", "").startswith(
            "application/json") else payload
        if response.status >= 400:
            text = parsed.decode("utf-8", "replace")[:200] if isinstance(parsed, bytes) else str(parsed)
            raise DaemonError(response.status, parsed if isinstance(parsed, dict) else
                              {"error": f"the daemon refused the request (HTTP {response.status}): {text}"})
        return parsed

    def get(self, route: str, **params: Any) -> Any:
        return self.request("GET", route, params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body if body is not None else {})

    def upload(self, path: str, fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> Any:
        """POST multipart/form-data: `fields`, and `files` as (field name, file name, bytes)."""
        boundary = "pixdex-" + secrets.token_hex(12)
        parts: list[bytes] = []
        for name, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, filename, data in files:
            safe = urllib.parse.quote(filename)
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                         "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return self.request("POST", path, body=b"".join(parts),
                            content_type=f"multipart/form-data; boundary={boundary}")


def read_upload(path: str, max_bytes: int) -> bytes:
    """The bytes of an image to send to the daemon, read as the direct path reads a query image: opened
    non-blocking (a FIFO cannot hang the command), checked with fstat to be a regular file, then read —
    at most `max_bytes` (a link to /dev/zero, or a huge file, is refused before it fills the memory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ReadError(path, f"cannot read query image: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # before fdopen, which refuses a folder with a traceback of its own
            raise ReadError(path, "not a regular file (a pipe, device or folder); pixdex reads only image files")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        data = handle.read(max_bytes + 1) if st.st_size <= max_bytes else b""
        if st.st_size > max_bytes or len(data) > max_bytes:
            raise ReadError(path, f"{max(st.st_size, len(data)):,} bytes, more than the {max_bytes:,} the daemon "
                                  "takes (server.max_upload_mb); send a smaller image or raise server.max_upload_mb")
    return data
