"""Loaded models with a time-to-live, as Immich's model cache: load on first use, unload when idle.

`ModelCache.use(key, loader)` hands out a loaded value and counts its users; loading is done once
per key even when several threads ask at the same time. A sweeper thread drops values that no one
uses and nobody asked for in `ttl` seconds, so their memory goes back to the system; the next
`use` loads them again. A ttl of 0 keeps them forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


def return_freed_memory() -> None:
    """Hand freed heap back to the system. glibc keeps what an unloaded ONNX session freed in its arenas
    (measured: 33 of 776 MiB came back without this, 510 with it; docs/BENCHMARKS.md)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    value: Any = None
    refs: int = 0
    last_used: float = 0.0
    loads: int = 0


class ModelCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[Hashable, _Entry] = {}
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    @contextmanager
    def use(self, key: Hashable, loader: Callable[[], Any]) -> Iterator[Any]:
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
        with entry.lock:
            if entry.value is None:
                entry.value = loader()
                entry.loads += 1
                self._start_sweeper()
            entry.refs += 1
            value = entry.value
        try:
            yield value
        finally:
            with entry.lock:
                entry.refs -= 1
                entry.last_used = self.clock()

    def loaded(self) -> list[Hashable]:
        with self._lock:
            return [k for k, e in self._entries.items() if e.value is not None]

    def loads(self, key: Hashable) -> int:
        entry = self._entries.get(key)
        return entry.loads if entry else 0

    def sweep(self) -> int:
        """Unload every value idle for longer than the ttl; returns how many were unloaded."""
        if self.ttl <= 0:
            return 0
        now = self.clock()
        dropped = 0
        with self._lock:
            entries = list(self._entries.items())
        for key, entry in entries:
            with entry.lock:
                if entry.value is not None and entry.refs == 0 and now - entry.last_used >= self.ttl:
                    entry.value = None
                    dropped += 1
                    log.info("unloaded %s after %.0f s idle", key, now - entry.last_used)
        if dropped:
            gc.collect()
            return_freed_memory()
        return dropped

    def clear(self) -> None:
        self._stop.set()
        with self._lock:
            for entry in self._entries.values():
                with entry.lock:
                    entry.value = None

    def _start_sweeper(self) -> None:
        if self._sweeper is None and self.ttl > 0:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="pixdex-model-ttl", daemon=True)
            self._sweeper.start()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(max(0.05, min(self.ttl / 4, 30.0))):
            self.sweep()
