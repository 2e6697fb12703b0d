"""The serving process's side of thumbnails: their own two threads for file work, a bound on how many are
made at once, and the budget of pixdex's own thumbnail cache.

A cached thumbnail (the desktop's or pixdex's own) is found and read by `routes.thumbnail` in one call on
this module's threads, never a call to the indexing process, and never behind a /status or /search in
the query pool (which may wait for the indexing process). A thumbnail to make is a call to the indexing
process, whose decode workers make it (`indexer.thumbnails.make_thumbnail`): at most
`server.thumbnail_jobs` at once; up to `WAITING` more requests wait their turn on the event loop (no
thread held), and beyond that a request gets 503 at once, so a page of a thousand new images cannot queue
unbounded work behind the searches.

The cache (`$XDG_CACHE_HOME/pixdex/thumbnails`) is kept under `server.thumbnail_cache_mb`:
`indexer.thumbnails.prune_own_cache` (superseded versions, then the least recently used) runs at start
and again whenever what was made since the last prune passes a tenth of the budget.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pixdex.daemon.core_api import Core
from pixdex.daemon.core_process import CoreProcess
from pixdex.indexer import thumbnails

log = logging.getLogger(__name__)

T = TypeVar("T")
WAITING = 64  # requests that may wait for a turn to make a thumbnail; more get 503


class Busy(Exception):
    """Too many thumbnails are waiting to be made."""


class ThumbnailJobs:
    def __init__(self, cache_dir: Path, jobs: int, budget_bytes: int) -> None:
        self.cache_dir = cache_dir
        self.budget = budget_bytes
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="pixdex-thumbnails")
        self._turns = asyncio.Semaphore(jobs)
        self._waiting = 0
        self._made_bytes = 0  # since the last prune
        self._pruning: asyncio.Future[int] | None = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking file work (finding and reading a cached thumbnail) on the thumbnails' own threads."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: function(*args))

    async def make(self, core: CoreProcess, real: bytes, dest: Path, pixels: int, max_pixels: int) -> Path:
        """Have the indexing process make one thumbnail, when a turn is free; Busy if too many wait."""
        if self._turns.locked() and self._waiting >= WAITING:
            raise Busy(f"{WAITING} thumbnails are waiting to be made; try again in a moment (server.thumbnail_jobs)")
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1
        try:
            made = Path(await asyncio.wrap_future(core.ask(Core.thumbnail, real, str(dest), pixels, max_pixels)))
        finally:
            self._turns.release()
        self._count(made)
        return made

    def _count(self, made: Path) -> None:
        try:
            self._made_bytes += os.stat(made).st_size
        except OSError:
            return
        if self._made_bytes > self.budget // 10:
            self.prune()

    def prune(self) -> None:
        """Prune the cache to its budget in the background, unless a prune is running already."""
        if self._pruning is not None and not self._pruning.done():
            return
        self._made_bytes = 0
        self._pruning = asyncio.get_running_loop().run_in_executor(
            self.pool, thumbnails.prune_own_cache, self.cache_dir, None, self.budget)
        self._pruning.add_done_callback(self._pruned)

    def _pruned(self, future: asyncio.Future[int]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.warning("%s: cannot prune the thumbnail cache: %s", self.cache_dir, future.exception())
        elif future.result():
            log.info("%s: %d bytes of old thumbnails removed (server.thumbnail_cache_mb)", self.cache_dir,
                     future.result())
