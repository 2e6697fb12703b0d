"""`pixdex serve`: open the core, listen on the Unix socket and loopback TCP, tell systemd, run until
SIGTERM/SIGINT, reload on SIGHUP.

Order matters. The open-file limit is raised to the hard limit first (the indexing process inherits
it). The data directory's lock is taken next (inside the core), so a second daemon stops there —
naming the holder — before it could touch the first one's socket; the socket's own lock then
guards the socket path. A socket file left by a crash is removed and bound again. Every listening
socket is served through a `connections.Gate` (caps that hold before a request is read), with
aiohttp's `keepalive_timeout` as the time a connection may wait without a request. READY
is sent once the indexes are open and the sites listen; WATCHDOG pings come from the event loop
(a stuck loop stops them), STATUS lines carry progress, STOPPING the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import fcntl
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from pixdex.daemon import notify
from pixdex.daemon.app import create_app
from pixdex.daemon.connections import (
    BACKLOG,
    Connections,
    Gate,
    Listener,
    caps,
    raise_file_limit,
)
from pixdex.daemon.core_api import Core
from pixdex.daemon.core_process import CoreProcess
from pixdex.daemon.events import EventBus
from pixdex.daemon.http_api import Context
from pixdex.daemon.logs import ClientErrors
from pixdex.daemon.metrics import Metrics
from pixdex.daemon.routes_status import live_status
from pixdex.daemon.sessions import Sessions
from pixdex.daemon.tokens import Tokens
from pixdex.daemon.webpage import lan_address, machine_addresses
from pixdex.indexer.cliptags import shipped_vocabulary
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config, ConfigError, load_config
from pixdex.query.reader import Reader
from pixdex.query.service import SearchService

log = logging.getLogger(__name__)
def serve(config: Config, config_path: Path | None) -> int:
    return asyncio.run(_serve(config, config_path))


async def _serve(config: Config, config_path: Path | None) -> int:
    loop = asyncio.get_running_loop()
    file_limit = raise_file_limit()
    bus = EventBus()
    bus.attach(loop)
    tokens = Tokens(config.state_dir / "tokens.json")
    tokens.load(create=config.server.tcp)
    daemon = CoreProcess(config, bus)
    signal.signal(signal.SIGUSR1, lambda *_: _dump_stacks(daemon))
    log.info("opening the indexes in %s", config.data_dir)
    # PixdexError: the data directory is held by another
    await asyncio.wrap_future(daemon.start(loop))
    ctx: Context | None = None
    runner: web.AppRunner | None = None
    socket_lock: IO[str] | None = None
    bound = False  # the Unix socket file is ours to remove (not systemd's)
    try:
        service = SearchService(config, Reader(config.layout, config.index))
        ctx = Context(config, daemon, service, tokens, bus, Metrics(lambda: _metrics_snapshot(ctx)),
                      sessions=Sessions(config.state_dir / "web-sessions.json"), lan_hosts=lan_hosts(config))
        shipped_vocabulary()  # read at start, as create_app reads the web page's files and openapi.json
        runner = web.AppRunner(create_app(ctx), handle_signals=False, access_log=None, shutdown_timeout=5.0,
                               max_line_size=64 * 1024,  # long queries reach the validator (server.max_query_chars)
                               keepalive_timeout=config.server.idle_timeout,
                               logger=ClientErrors(logging.getLogger("aiohttp.server")))
        await runner.setup()
        socket_lock, bound = await _listen(runner, config, ctx.connections, file_limit)
        ctx.lan = (config.server.lan, config.server.lan_port) if config.server.lan else None  # until a restart
        ctx.tcp_port = config.server.port if config.server.tcp else None
        ctx.thumbnail_jobs.prune()  # to server.thumbnail_cache_mb, in the background
        where = f"{config.socket_path}" + (f" and 127.0.0.1:{config.server.port}" if config.server.tcp else "") \
            + (f" and {config.server.lan}:{config.server.lan_port}" if config.server.lan else "")
        state = await asyncio.wrap_future(daemon.ask(Core.state, 0, False))
        mode = "full" if state["mode"] == "full" else "reduced (no models)"
        log.info("pixdex serving on %s, %s mode, pid %d (indexing in pid %d)", where, mode, os.getpid(), state["pid"])
        notify.ready(f"serving on {where}; {mode} mode")
        await _run_until_stopped(ctx, config_path)
    finally:
        notify.stopping()
        log.info("stopping: finishing the current batch, committing, saving the vector index")
        if ctx is not None:
            ctx.stopping.set()
        if runner is not None:
            await runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            if bound:
                config.socket_path.unlink()
        await loop.run_in_executor(None, daemon.close)
        if ctx is not None:
            ctx.pool.shutdown(wait=False, cancel_futures=True)
            ctx.thumbnail_jobs.pool.shutdown(wait=False, cancel_futures=True)
        if socket_lock is not None:
            socket_lock.close()
        log.info("stopped")
    return 0


def _serve_on(loop: asyncio.AbstractEventLoop, sock: socket.socket, gate: Gate) -> Awaitable[asyncio.AbstractServer]:
    """Serve a socket systemd passed (socket activation) through the connection gate."""
    return loop.create_server(gate, sock=sock, backlog=BACKLOG)


def _dump_stacks(daemon: CoreProcess) -> None:
    """SIGUSR1: every thread's stack to the log, this process's and the indexing process's (a daemon that
    hangs says where: `systemctl --user kill -s USR1 pixdex`, then the journal)."""
    log.warning("SIGUSR1: the stacks of every thread follow, this process's then the indexing process's")
    faulthandler.dump_traceback(all_threads=True)
    if daemon.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGUSR1)


class GatedSite(web.BaseSite):
    """A listening socket served through a `Gate` (aiohttp's own sites hand `runner.server` to asyncio
    directly, with nothing in between to count connections)."""

    def __init__(self, runner: web.AppRunner, name: str,
                 open_server: Callable[[Gate], Awaitable[asyncio.AbstractServer]], gate: Gate) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._name = name
        self._open = open_server
        self._gate = gate

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        self._server = await self._open(self._gate)


async def _listen(runner: web.AppRunner, config: Config, connections: Connections, file_limit: int
                  ) -> tuple[IO[str], bool]:
    """Bind the Unix socket (0600 in a 0700 folder) and loopback TCP, or take systemd's sockets."""
    path = config.socket_path
    lock = _lock_socket(path)
    loop = asyncio.get_running_loop()
    sites: list[tuple[str, Callable[[Gate], Awaitable[asyncio.AbstractServer]]]] = []
    activated = notify.listen_fds()
    for sock in activated:
        kind = "socket" if sock.family == socket.AF_UNIX else "loopback"
        sites.append((kind, partial(_serve_on, loop, sock)))
    bound = not any(s.family == socket.AF_UNIX for s in activated)
    if bound:
        if path.exists() or path.is_symlink():
            log.info("%s: removing a socket left by an earlier run", path)
            path.unlink()
        sites.append(("socket", lambda gate: loop.create_unix_server(gate, str(path), backlog=BACKLOG)))
    if config.server.tcp and not any(s.family != socket.AF_UNIX for s in activated):
        sites.append(("loopback", lambda gate: loop.create_server(gate, "127.0.0.1", config.server.port,
                                                                   reuse_address=True, backlog=BACKLOG)))
    if config.server.lan:
        sites.append(("lan", lambda gate: loop.create_server(gate, config.server.lan, config.server.lan_port,
                                                              reuse_address=True, backlog=BACKLOG)))
    handler = runner.server
    assert handler is not None  # after runner.setup()
    unix_cap, tcp_cap = caps(file_limit, config.server.max_connections, sum(k != "socket" for k, _ in sites))
    for kind, open_server in sites:
        listener = connections.add(Listener(kind, unix_cap if kind == "socket" else tcp_cap,
                                            None if kind == "socket" else config.server.max_connections_per_peer))
        await _start_site(GatedSite(runner, kind, open_server, Gate(listener, handler)), config)
    log.info("open-file limit %d: at most %d connections on the socket, %d on each TCP listener "
             "(server.max_connections = %d)", file_limit, unix_cap, tcp_cap, config.server.max_connections)
    return lock, bound


def _lock_socket(path: Path) -> IO[str]:
    """The socket's folder must be ours; its lock file keeps a second daemon off a live socket."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = path.parent.lstat()
    if folder.st_uid != os.getuid() or not path.parent.is_dir() or path.parent.is_symlink():
        raise PixdexError(f"{path.parent}: not a folder of yours (owner uid {folder.st_uid}); pixdex will not put "
                          "its socket there — set XDG_RUNTIME_DIR or server.socket")
    os.chmod(path.parent, 0o700)
    lock = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115 - held while serving
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise PixdexError(f"{path}: another pixdex daemon serves this socket (with another data directory?); "
                          "stop it or set server.socket") from None
    return lock


async def _start_site(site: GatedSite, config: Config) -> None:
    """Start one listener: the socket file 0600; a port that cannot be bound named with the setting to change."""
    old = os.umask(0o177)
    try:
        await site.start()
    except OSError as exc:
        if site.name == "socket":
            raise
        host, port, fix = ((config.server.lan, config.server.lan_port, "set server.lan_port, or server.lan = \"\" "
                            "to turn it off") if site.name == "lan" else
                           ("127.0.0.1", config.server.port, "set server.port to a free port or server.tcp = false"))
        what = "listen for the LAN" if site.name == "lan" else "listen"
        raise PixdexError(f"{host}:{port}: cannot {what} ({exc.strerror}); {fix}") from None
    finally:
        os.umask(old)
    if site.name == "lan":
        log.warning("serving the LAN on %s:%d too (token or login link required)", config.server.lan,
                    config.server.lan_port)


def lan_hosts(config: Config) -> set[str]:
    """The Host values a LAN request may carry: the addresses it may have reached (IP literals only)."""
    if not config.server.lan:
        return set()
    found = machine_addresses() if config.server.lan in ("0.0.0.0", "::") else {config.server.lan}
    found.add(lan_address(config.server.lan))
    return found | {f"[{a}]" for a in found if ":" in a}


async def _run_until_stopped(ctx: Context, config_path: Path | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(ctx, config_path)))
    interval = notify.watchdog_interval()
    tick = min(interval, 2.0) if interval else 2.0
    last_line = ""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), tick)
        if interval:
            notify.watchdog()
        try:
            state = await asyncio.wrap_future(ctx.core.ask(Core.state, 0, False))
        except PixdexError:  # Unavailable: the indexing process is starting again
            state = {"ok": False}
        line, busy = _status_line(state)
        if line != last_line:
            notify.status(line)
            last_line = line
        if busy and state["ok"]:
            ctx.bus.publish("progress", **state["progress"], line=line)


def _status_line(state: dict[str, Any]) -> tuple[str, bool]:
    if not state["ok"]:
        return "reopening the indexing core", True
    progress = state["progress"]
    mode = "" if state["mode"] == "full" else "reduced mode (no models); "
    if state["paused"]:
        return f"{mode}paused; {progress['committed']} committed", False
    busy = state["busy"]
    if not busy:
        return f"{mode}idle; {progress['committed']} committed, {progress['failed']} failed", False
    return (f"{mode}indexing at {progress['rate']}/s; {progress['committed']} committed, "
            f"{progress['failed']} failed"), True


async def _reload(ctx: Context, config_path: Path | None) -> None:
    """SIGHUP: read the config again; a bad one is refused (the old one stays) and the reason logged."""
    notify.reloading("reloading the config")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        log.error("config not reloaded, the old one stays: %s", exc)
        ctx.bus.publish("config", refused=str(exc))
        notify.ready("config refused; still serving with the old one")
        return
    try:
        result = await asyncio.wrap_future(ctx.core.ask(Core.reload, config))
        ctx.config = config
        ctx.service.config = config
        log.info("config reloaded: %s", result)
    except Exception as exc:  # noqa: BLE001 - logged; the daemon keeps what it had
        log.error("config reload failed: %s", exc)
    notify.ready("config reloaded")


def _metrics_snapshot(ctx: Context | None) -> dict[str, Any]:
    assert ctx is not None
    info = live_status(ctx)
    return {"queue": info["queue"], "counts": info["counts"], "waiting_for_models": info["waiting_for_models"],
            "rate": info["progress"]["rate"], "committed": info["progress"]["committed"],
            "failed": info["progress"]["failed"], "paused": info["daemon"]["paused"],
            "reduced": info["daemon"]["mode"] == "reduced",
            "loaded_models": info["loaded_models"]["indexing"] + info["loaded_models"]["query"],
            "rss": info["loaded_models"]["rss"], "roots": info["watch"], "connections": info["connections"],
            "pss": info["memory"]["pss"], "idle": info["memory"]["idle"]}
