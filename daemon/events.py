"""The daemon's event stream: what `GET /events` sends as Server-Sent Events.

Any thread publishes (the pipeline's stages, the scanner, the watcher); events get increasing
ids and the last `keep` stay in memory, so a client that reconnects with `Last-Event-ID` gets
what it missed (or a `reset` event when that is no longer kept). Subscribers are asyncio tasks
on the server's loop; publishing never blocks on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

KINDS = ("describe", "ocr", "queued", "stage", "indexed", "failed", "removed", "progress", "paused", "resumed",
         "config", "models", "watch", "reset")


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]

    def sse(self) -> bytes:
        return f"id: {self.id}\nevent: {self.kind}\ndata: {json.dumps(self.data, ensure_ascii=False)}\n\n".encode()


class Bus(Protocol):
    """Where events go: the serving process's `EventBus`, or the pipe up to it (`core_child.PipeBus`)."""

    def publish(self, kind: str, **data: Any) -> None: ...


class EventBus:
    def __init__(self, keep: int = 10_000) -> None:
        self._events: deque[Event] = deque(maxlen=keep)
        self._ids = itertools.count(int(time.time() * 1000))  # ids keep increasing across restarts
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._wake_pending = False  # one wake-up of the loop per burst of events, not one per event

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribers live on this loop; call from it."""
        self._loop = loop
        self._changed = asyncio.Condition()

    def publish(self, kind: str, **data: Any) -> None:
        assert kind in KINDS, kind
        loop = self._loop
        with self._lock:
            self._events.append(Event(next(self._ids), kind, data))
            if self._wake_pending or loop is None:
                return
            self._wake_pending = True
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._notify()))

    async def _notify(self) -> None:
        assert self._changed is not None
        with self._lock:
            self._wake_pending = False
        async with self._changed:
            self._changed.notify_all()

    def since(self, last_id: int | None) -> list[Event]:
        """Events after `last_id`; a reset marker first when some of them are no longer kept."""
        with self._lock:
            events = list(self._events)
        if last_id is None:
            return []
        newer = [e for e in events if e.id > last_id]
        if events and last_id < events[0].id - 1 and (not newer or newer[0].id == events[0].id):
            reset = Event(events[0].id - 1, "reset", {"why": "events after Last-Event-ID are no longer kept; "
                                                             "re-read /status"})
            return [reset, *newer]
        return newer

    def last_id(self) -> int:
        with self._lock:
            return self._events[-1].id if self._events else 0

    async def wait(self, after: int, timeout: float) -> None:
        assert self._changed is not None
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.last_id() > after), timeout)
