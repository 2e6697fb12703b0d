"""A service that strangers cannot stall (issue 17), on the real daemon and real sockets: connection caps and the
idle timeout before any request is read, the Unix socket's reserve under a TCP flood, header values that are not
text, malformed requests and repeated log lines, the CLI's reads of odd files through the daemon, one answer for
"not indexed" and "not visible", and thumbnails served from the cache without the indexing process."""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import PIXDEX, make_library, noise
from served import Served, wait_for

pytestmark = pytest.mark.slow
TOKEN_HEADER = "Authorization: Bearer {}\r\n"


def library(root: Path) -> tuple[Path, Path]:
    pics, other = root / "pics", root / "other"
    make_library(pics)
    other.mkdir()
    noise(50).save(other / "elsewhere_boat.jpg")
    return pics, other


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    """A daemon with tiny connection caps and a one-second idle timeout."""
    root = tmp_path_factory.mktemp("small")
    daemon = Served(root, model_dir, [library(root)[0]],
                    extra="idle_timeout = 1\nmax_connections = 16\nmax_connections_per_peer = 2\n").start()
    wait_for(daemon.idle, timeout=60, what="the library")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    """A daemon with the default caps, making one thumbnail at a time."""
    root = tmp_path_factory.mktemp("hardening")
    daemon = Served(root, model_dir, list(library(root)), extra="thumbnail_jobs = 1\n").start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 9, timeout=60, what="the library")
    yield daemon
    daemon.stop()


# Raw connections ------------------------------------------------------------------------------------
def connect(daemon: Served, unix: bool = False, source: str | None = None) -> socket.socket:
    if unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket_path))
    else:
        sock = socket.create_connection(("127.0.0.1", daemon.port), source_address=(source, 0) if source else None)
    sock.settimeout(30)
    return sock


def exchange(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    """Send one request with Connection: close; the status and body of the answer."""
    sock.sendall(request)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def get(path: str, host: str = "127.0.0.1", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the daemon closes this connection within `within` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False


def log_tail(daemon: Served, start: int) -> str:
    with open(daemon.log, "rb") as handle:
        handle.seek(start)
        return handle.read().decode(errors="replace")


# 1. Connections ----------------------------------------------------------------------------------------
def test_idle_connections_cannot_lock_out_tcp_or_the_socket(tmp_path: Path, model_dir: Path) -> None:
    """The issue's acceptance check: the daemon's file limit at 1024 (soft and hard, so raising it cannot help),
    1,100 idle connections held open on its TCP port from 20 loopback addresses: an authorised /health over TCP
    and `pixdex status` over the socket answer within 2 s, the log grows by less than 1 MB in 30 s and the
    daemon's processes use less than 10% of a core."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"this process may open only {hard} files; the flood needs 1,100 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    daemon = Served(tmp_path, model_dir, [library(tmp_path)[0]], nofile=1024).start()
    flood: list[socket.socket] = []
    try:
        wait_for(daemon.idle, timeout=60, what="the library")
        processes = [psutil.Process(daemon.proc.pid)]  # type: ignore[union-attr]
        processes += processes[0].children(recursive=True)
        for n in range(1100):
            flood.append(connect(daemon, source=f"127.0.0.{2 + n % 20}"))
        log_size, cpu, started = daemon.log.stat().st_size, _cpu(processes), time.monotonic()

        began = time.monotonic()
        health = subprocess.run(["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                 f"Authorization: Bearer {daemon.token()}", f"http://127.0.0.1:{daemon.port}/health"],
                                capture_output=True, text=True)
        health_seconds = time.monotonic() - began
        began = time.monotonic()
        status = subprocess.run([str(PIXDEX), "--config", str(daemon.config), "status"], env=daemon.environ,
                                capture_output=True, text=True, timeout=60)
        status_seconds = time.monotonic() - began
        time.sleep(max(0.0, 30 - (time.monotonic() - started)))
        cpu_share = (_cpu(processes) - cpu) / (time.monotonic() - started)
        grown = daemon.log.stat().st_size - log_size
        counts = daemon.status()["connections"]
    finally:
        for sock in flood:
            sock.close()
        daemon.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert health.stdout == "200" and health_seconds < 2, (health, health_seconds)
    assert status.returncode == 0 and status_seconds < 2, (status.stderr, status_seconds)
    assert "connections: socket" in status.stdout and "idle closed to make room" in status.stdout
    assert grown < 1_000_000, f"the log grew by {grown:,} bytes in 30 s"
    assert cpu_share < 0.10, f"the daemon used {cpu_share:.0%} of a core"
    loopback = counts["loopback"]
    assert loopback["open"] <= loopback["limit"] < 1024 - counts["socket"]["limit"]
    assert loopback["closed_idle"] >= 1100 - loopback["limit"]


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def test_a_connection_that_sends_no_whole_request_is_closed(small: Served) -> None:
    silent = connect(small)
    slow = connect(small)
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # the headers never end
    assert closed_by_server(silent, within=20) and closed_by_server(slow, within=20)


def test_over_the_peer_cap_the_least_recently_active_idle_connection_makes_room(served: Served) -> None:
    idle = [connect(served) for _ in range(64)]  # max_connections_per_peer = 64 (the default), all idle
    time.sleep(0.2)
    status, _ = exchange(connect(served), get("/health", extra=TOKEN_HEADER.format(served.token())))
    assert status == 200
    assert closed_by_server(idle[0], within=5)  # at once: the idle timeout (10 s) is far
    assert all(still_open(sock) for sock in idle[1:])
    for sock in idle:
        sock.close()


def test_when_every_connection_is_busy_a_new_one_is_refused_at_once_with_503(small: Served) -> None:
    streams = []
    for _ in range(16):  # the socket's cap: max_connections = 16; each an event stream, busy until closed
        stream = connect(small, unix=True)
        stream.sendall(get("/events", host="localhost").replace(b"Connection: close\r\n", b""))
        assert stream.recv(12) == b"HTTP/1.1 200"
        streams.append(stream)
    try:
        status, body = exchange(connect(small, unix=True), get("/health", host="localhost"))
        assert status == 503 and "too many connections" in json.loads(body)["error"]
        streams.pop().close()
        time.sleep(0.5)
        assert exchange(connect(small, unix=True), get("/health", host="localhost"))[0] == 200
    finally:
        for stream in streams:
            stream.close()
    assert small.status()["connections"]["socket"]["refused"] >= 1


# 2. Headers and the log --------------------------------------------------------------------------------
def test_header_values_that_are_not_text_get_4xx_not_500(served: Served) -> None:
    start = served.log.stat().st_size
    cases = {b"Authorization: Bearer \xff\r\n": 401, b"Host: 127.0.0.1\xff\r\n": 400,
             b"Cookie: pixdex_session=\xff\r\n": 400}
    for header, expected in cases.items():
        request = b"GET /search?q=x HTTP/1.1\r\n" + (b"" if header.startswith(b"Host") else b"Host: 127.0.0.1\r\n") \
            + header + b"Connection: close\r\n\r\n"
        status, body = exchange(connect(served), request)
        assert status == expected, (header, body)
        assert "not valid text" in json.loads(body)["error"]
    assert "Traceback" not in log_tail(served, start)


def test_malformed_requests_are_one_warning_line_each_and_repeats_are_held_back(served: Served) -> None:
    start = served.log.stat().st_size
    for _ in range(200):
        status, _ = exchange(connect(served), b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: localhost\r\n\r\n")
        assert status == 400
    time.sleep(0.5)
    lines = log_tail(served, start).splitlines()
    malformed = [line for line in lines if "malformed request from 127.0.0.1" in line]
    assert malformed and all(" WARNING aiohttp.server: " in line and "Duplicate 'Host'" in line for line in malformed)
    assert len(lines) <= 12, "\n".join(lines[:20])  # ten a minute from one cause, then held back and counted
    assert not any("Traceback" in line for line in lines)


def test_a_repeated_message_is_held_back_and_counted() -> None:
    from pixdex.daemon.logs import RepeatLimit

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RepeatLimit(period=0.5, burst=3))
    logger = logging.getLogger("pixdex.test.repeat")
    logger.propagate, logger.handlers = False, [handler]
    logger.setLevel(logging.DEBUG)
    for n in range(51):  # one line of code: one cause
        if n == 50:
            time.sleep(0.6)  # a new period
        logger.warning("accept failed (%d)", n)
        logger.debug("debug lines are never held back (%d)", n)
    lines = out.getvalue().splitlines()
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert warnings == ["WARNING accept failed (0)", "WARNING accept failed (1)", "WARNING accept failed (2)",
                        "WARNING accept failed (50)"]
    assert lines[-2] == "(… 47 more like this held back in the last minute)"
    assert sum(line.startswith("DEBUG") for line in lines) == 51


def test_a_body_the_client_never_sends_ends_its_request_without_a_traceback(served: Served) -> None:
    """Found by a trial: a PATCH with Content-Length 1000, a few bytes of body, then the connection closed, logged
    "Error handling request" and a 35-line traceback ending in "ConnectionResetError: Connection lost". The
    client went away: a debug line at most, over the socket and over TCP; the daemon answers the next request."""
    start = served.log.stat().st_size
    item = next(iter(served.listed().values()))
    token = TOKEN_HEADER.format(served.token())
    for unix in (True, False):
        for method, path in (("PATCH", f"/items/{item}"), ("POST", "/watches")):
            sock = connect(served, unix=unix)
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{'' if unix else token}"
                         "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"add_ta".encode())
            time.sleep(0.3)  # the handler is waiting for the rest of the body
            sock.close()
    time.sleep(0.5)
    assert exchange(connect(served), get("/health", extra=token))[0] == 200
    assert exchange(connect(served, unix=True), get("/health"))[0] == 200
    tail = log_tail(served, start)
    assert "Traceback" not in tail and "Error handling request" not in tail, tail[:3000]
    assert len(tail.splitlines()) <= 4, tail[:3000]


# 3. The CLI's reads through the daemon --------------------------------------------------------------------
def test_similar_on_a_fifo_or_a_link_to_dev_zero_fails_at_once_with_one_line(served: Served, tmp_path: Path) -> None:
    fifo, zero, big, folder = tmp_path / "pipe.jpg", tmp_path / "zero.jpg", tmp_path / "big.jpg", tmp_path / "a folder"
    folder.mkdir()
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    with open(big, "wb") as handle:
        handle.truncate(33 * 2**20)  # over server.max_upload_mb = 32 (sparse: no disk used)
    for path, reason in ((fifo, "not a regular file"), (zero, "not a regular file"), (big, "server.max_upload_mb"),
                         (folder, "not a regular file")):
        began = time.monotonic()
        done = subprocess.run([str(PIXDEX), "--config", str(served.config), "similar", str(path)], env=served.environ,
                              capture_output=True, text=True, timeout=60)
        assert time.monotonic() - began < 5, path
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert reason in done.stderr and os.path.realpath(path) in done.stderr


# 4. A limited token --------------------------------------------------------------------------------------
def test_similar_by_path_answers_the_same_for_not_indexed_and_not_visible(served: Served) -> None:
    made = subprocess.run([str(PIXDEX), "--config", str(served.config), "token", "--new", "--only", "other"],
                          env=served.environ, capture_output=True, text=True, check=True)
    headers = {"Host": "127.0.0.1", "Authorization": f"Bearer {made.stdout.strip()}"}
    hidden = served.folders[0] / "holiday" / "beach_sunset_01.jpg"  # indexed, in a collection it cannot see
    missing = served.folders[0] / "holiday" / "beach_sunset_99.jpg"
    answers = [served.raw("GET", f"/similar?path={path}", headers, tcp=True) for path in (hidden, missing)]
    (status_hidden, body_hidden), (status_missing, body_missing) = answers
    assert status_hidden == status_missing == 404
    assert body_hidden == {**body_missing, "error": body_missing["error"].replace(str(missing), str(hidden))}  # type: ignore[index,union-attr]


# 5. Thumbnails ------------------------------------------------------------------------------------------
def indexing_pid(daemon: Served) -> int:
    return int(daemon.status()["daemon"]["indexing_pid"])


def test_a_cached_thumbnail_is_served_while_the_indexing_process_is_stopped(served: Served) -> None:
    item = served.listed()[str(served.folders[0] / "holiday" / "harbour_boats.jpg")]
    first = served.raw("GET", f"/thumbnail/{item}?size=200", {"Host": "localhost"})
    assert first[0] == 200
    pid = indexing_pid(served)
    os.kill(pid, signal.SIGSTOP)
    try:
        again = _thumbnail(served, item, 200, timeout=20)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert again == first


def test_thumbnails_made_at_once_are_bounded_and_the_waiting_line_is_capped(served: Served) -> None:
    from pixdex.daemon.thumbnail_jobs import WAITING

    item = served.listed()[str(served.folders[0] / "holiday" / "beach_sunset_02.jpg")]
    pid = indexing_pid(served)
    answers: list[int] = []
    os.kill(pid, signal.SIGSTOP)  # the one thumbnail being made (thumbnail_jobs = 1) cannot finish
    try:
        threads = [threading.Thread(target=lambda: answers.append(_thumbnail(served, item, 1000, timeout=60)[0]))
                   for _ in range(WAITING + 2)]
        for thread in threads:
            thread.start()
            time.sleep(0.01)
        wait_for(lambda: answers, timeout=20, what="the one refused at once")
        assert answers == [503]
    finally:
        os.kill(pid, signal.SIGCONT)
    for thread in threads:
        thread.join(60)
    assert sorted(answers) == [200] * (WAITING + 1) + [503]


def _thumbnail(daemon: Served, item: int, size: int, timeout: float) -> tuple[int, bytes]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(daemon.socket_path))
    return exchange(sock, get(f"/thumbnail/{item}?size={size}", host="localhost"))


def test_the_daemon_keeps_its_thumbnail_cache_under_its_budget(tmp_path: Path, model_dir: Path) -> None:
    cache = tmp_path / "cache" / "pixdex" / "thumbnails" / "large"
    cache.mkdir(parents=True)
    now = time.time()
    for n in range(4):  # 4 × 400 KiB, the newest used last; the budget is 1 MiB: the two oldest go
        thumb = cache / f"{n + 1:016x}-1000.jpg"
        thumb.write_bytes(os.urandom(400 * 1024))
        os.utime(thumb, (now - 100 + n, now - 100 + n))
    daemon = Served(tmp_path, model_dir, [library(tmp_path)[0]], extra="thumbnail_cache_mb = 1\n").start()
    try:
        wait_for(lambda: len(list(cache.iterdir())) == 2, timeout=30, what="the cache pruned to 1 MiB")
        assert sorted(p.name for p in cache.iterdir()) == [f"{3:016x}-1000.jpg", f"{4:016x}-1000.jpg"]
    finally:
        daemon.stop()
