"""Limits on open connections that hold before a request is read, so no stranger can stall the daemon.

asyncio and aiohttp accept every connection the kernel hands them and keep it until the client
leaves; neither caps how many are open at once. A local process without any token could hold a
thousand idle connections on the loopback port, run the daemon out of file descriptors and lock
everyone out — the owner's commands on the Unix socket too.

Each listening socket is served through a `Gate` holding its `Listener`: a cap on open connections
(`server.max_connections`, lowered at start by `caps` to fit the file limit, the Unix socket's share
set aside first) and, on TCP, a cap per peer address (`server.max_connections_per_peer`). A
connection beyond a cap is settled at once, never queued: the least recently active *idle*
connection of that peer (over the peer cap) or of the listener (over the listener cap) is closed to
make room; when every one is busy with a request, the newcomer gets a 503 and is closed. Idle means
no request in progress: connected without a whole request yet, or waiting between keep-alive
requests. A client without a token only ever holds idle connections (the guard answers its requests
at once), so an authorised request always gets in.

aiohttp's `keepalive_timeout` (`server.idle_timeout`; since aiohttp 3.14.4 it also runs from the
moment a connection opens) closes a connection that sends no whole request in that time, or waits
that long between two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

OWN_FILES = 256  # the serving process's own descriptors: stores, pipe, pools, files being served, headroom
BACKLOG = 128  # connections not yet accepted the kernel queues (aiohttp's default); asyncio accepts that many at once
MIN_CAP = 16
REFUSED_LINGER = 1.0  # seconds a refused connection stays half-closed, so its client reads the 503
REFUSED_BODY = json.dumps({"error": "too many connections, every one busy with a request; try again in a moment"})
REFUSED = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
           f"Connection: close\r\nContent-Length: {len(REFUSED_BODY)}\r\n\r\n{REFUSED_BODY}").encode()


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as most servers do at start); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = 1 << 20  # what the kernel allows at most by default (fs.nr_open)
    if soft == resource.RLIM_INFINITY:
        return unlimited
    target = hard if hard != resource.RLIM_INFINITY else unlimited
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return int(soft)


def caps(file_limit: int, wanted: int, tcp_listeners: int) -> tuple[int, int]:
    """(cap of the Unix socket, cap of each TCP listener) that fit in `file_limit` descriptors beside the
    process's own and the accept queues; the Unix socket's share comes first, so a TCP flood never
    takes the descriptors the owner's commands need."""
    budget = file_limit - OWN_FILES - BACKLOG * (1 + tcp_listeners)
    unix = max(MIN_CAP, min(wanted, budget // 4))
    tcp = max(MIN_CAP, min(wanted, (budget - unix) // max(tcp_listeners, 1)))
    return unix, tcp


@dataclass
class _Connection:
    transport: asyncio.BaseTransport
    peer: str
    busy: int = 0  # requests in progress


class Listener:
    """One listening socket's open connections, least recently active first."""

    def __init__(self, name: str, limit: int, per_peer: int | None) -> None:
        self.name = name
        self.limit = limit
        self.per_peer = per_peer  # None: no cap per peer (the Unix socket: one owner)
        self._open: OrderedDict[asyncio.BaseTransport, _Connection] = OrderedDict()
        self._peers: Counter[str] = Counter()
        self.refused = 0
        self.closed_idle = 0
        self.in_progress = 0  # requests being answered (aiohttp answers one at a time per connection)

    def admit(self, transport: asyncio.BaseTransport, peer: str) -> bool:
        """Make room for a new connection by closing an idle one if a cap is reached; False when none is idle."""
        if self.per_peer is not None and self._peers[peer] >= self.per_peer:
            reached = f"{self.per_peer} connections from {peer} (server.max_connections_per_peer)"
            if not self._close_idle(peer, reached):
                return self._refuse(reached)
        if len(self._open) >= self.limit:
            reached = f"{self.limit} connections (server.max_connections)"
            if not self._close_idle(None, reached):
                return self._refuse(reached)
        self._open[transport] = _Connection(transport, peer)
        self._peers[peer] += 1
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        connection = self._open.pop(transport, None)
        if connection is not None:
            self._peers[connection.peer] -= 1
            if not self._peers[connection.peer]:
                del self._peers[connection.peer]

    def holds(self, transport: asyncio.BaseTransport) -> bool:
        return transport in self._open

    @contextlib.contextmanager
    def busy(self, transport: asyncio.BaseTransport) -> Iterator[None]:
        """While a request is in progress its connection is not idle, and afterwards it is the most recent."""
        connection = self._open.get(transport)
        if connection is not None:
            connection.busy += 1
            self.in_progress += 1
        try:
            yield
        finally:
            if connection is not None:
                connection.busy -= 1
                self.in_progress -= 1
                if transport in self._open:
                    self._open.move_to_end(transport)

    def _close_idle(self, peer: str | None, reached: str) -> bool:
        """Close the least recently active idle connection (of `peer`, if given); False when all are busy."""
        for connection in self._open.values():
            if not connection.busy and (peer is None or connection.peer == peer):
                self.release(connection.transport)
                connection.transport.abort()  # type: ignore[attr-defined]
                self.closed_idle += 1
                log.warning("%s: %s; closed the least recently active idle one%s to make room", self.name, reached,
                            f" (from {connection.peer})" if connection.peer else "")
                return True
        return False

    def _refuse(self, reached: str) -> bool:
        self.refused += 1
        log.warning("%s: %s, every one busy with a request; refused a new one with 503", self.name, reached)
        return False

    def counts(self) -> dict[str, Any]:
        """What `pixdex status` and /metrics show (plain reads: safe from another thread)."""
        return {"open": len(self._open), "limit": self.limit, "per_peer": self.per_peer, "busy": self.in_progress,
                "closed_idle": self.closed_idle, "refused": self.refused}


class Connections:
    """Every listener, for the middleware that marks requests in progress and for `pixdex status`."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def add(self, listener: Listener) -> Listener:
        self.listeners.append(listener)
        return listener

    def busy(self, transport: asyncio.BaseTransport | None) -> contextlib.AbstractContextManager[None]:
        for listener in self.listeners:
            if transport is not None and listener.holds(transport):
                return listener.busy(transport)
        return contextlib.nullcontext()

    def counts(self) -> dict[str, dict[str, Any]]:
        return {listener.name: listener.counts() for listener in self.listeners}


class Gate:
    """The protocol factory of one listening socket: aiohttp's request handler behind the listener's caps."""

    def __init__(self, listener: Listener, handler: Callable[[], asyncio.Protocol]) -> None:
        self.listener = listener
        self.handler = handler

    def __call__(self) -> asyncio.Protocol:
        return _Gated(self.listener, self.handler)


class _Gated(asyncio.Protocol):
    """Admits the connection (or answers 503 and closes it), then passes everything to aiohttp's handler."""

    def __init__(self, listener: Listener, handler: Callable[[], asyncio.Protocol]) -> None:
        self._listener = listener
        self._handler = handler
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._abort: asyncio.TimerHandle | None = None  # a refused connection's end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        if not self._listener.admit(transport, peer[0] if isinstance(peer, tuple) else ""):
            self._refuse(transport)
            return
        self._transport = transport
        self._inner = self._handler()
        self._inner.connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        """Answer 503 and end the connection. Closed at once, a socket with the request still unread would
        be reset, and the client might never read the answer: half-close, drop what comes, close after a
        second at most."""
        stream: Any = transport
        stream.write(REFUSED)
        if stream.can_write_eof():
            stream.write_eof()
        self._abort = asyncio.get_running_loop().call_later(REFUSED_LINGER, stream.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort is not None:
            self._abort.cancel()
        if self._inner is not None and self._transport is not None:
            self._listener.release(self._transport)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else False  # refused: close now

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
