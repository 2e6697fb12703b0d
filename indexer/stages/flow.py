"""What the stages share: the attributes of the `Pipeline` they are part of, and the plumbing between them —
a put with back-pressure that gives up when the pipeline stops, waiting on a worker's future without
waiting forever, the flight of queue entries, the event listener.

Each stage is a mixin of `Flow` in its own module; `pipeline.Pipeline` combines them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.inference import ModelInfo, ModelSpec
from pixdex.indexer.paths import display_path
from pixdex.indexer.pools import Pool
from pixdex.indexer.settings import Config
from pixdex.indexer.sidecars.keeper import SidecarKeeper
from pixdex.indexer.stages.parking import Parking
from pixdex.indexer.stages.stats import Stats
from pixdex.indexer.stages.work import STOP, Work
from pixdex.indexer.writer import Writer

log = logging.getLogger(__name__)
T = TypeVar("T")
Inbox = queue.Queue[Any]  # Work, a batch of them, or STOP
Stage = Callable[[Inbox, Inbox], None]


class Stopped(Exception):
    """The pipeline stopped while a stage waited on a worker."""


class Flow:
    """The state every stage reads (set by `Pipeline.__init__`) and the helpers they share."""

    config: Config
    info: ModelInfo
    spec: ModelSpec
    writer: Writer
    decode_pool: Pool
    infer_pool: Pool
    sidecars: SidecarKeeper
    stats: Stats
    parking: Parking
    fatal: BaseException | None
    inflight: set[int]
    paused: threading.Event
    listener: Callable[[str, dict[str, Any]], None] | None  # the daemon's event stream
    _inflight_lock: threading.Lock
    _upstream: int  # entries fed but not yet at the batch stage (under `_inflight_lock`)
    _starved: bool  # the feed's last look found nothing to feed
    _at_writer: int  # entries handed to the writer, not yet committed (under `_inflight_lock`)
    _wake: threading.Event
    _stopping: threading.Event
    _window: int
    _queue_db: Catalog  # the feed's read connection; others share it under `_queue_lock`
    _queue_lock: threading.Lock
    _rekeyed: dict[int, int]  # rows that took their sidecar's id as they committed (old → new)

    def request_stop(self) -> None:
        """Stop taking work: stages drop what they hold (it stays queued) and exit."""
        self._stopping.set()
        self._wake.set()

    def _put(self, outbox: queue.Queue[Any], item: Any) -> bool:
        """Put with back-pressure, but give up when the pipeline stops."""
        while not self._stopping.is_set():
            try:
                outbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _await(self, future: Future[T]) -> T:
        """A worker's result; raises `Stopped` when the pipeline stops first (a stopped pool's futures
        may never resolve, and what they say then is not the file's fault)."""
        while True:
            if self._stopping.is_set():
                raise Stopped
            try:
                return future.result(timeout=0.1)
            except FutureTimeout:
                if future.done():
                    raise  # the task itself ran past its timeout
            except BrokenProcessPool as exc:  # every worker gone (SIGTERM to the group, OOM): no file's fault
                if not self._stopping.is_set():
                    self.fatal = self.fatal or PixdexError(
                        f"the worker processes stopped ({exc or 'broken pool'}); no file was blamed and the queue "
                        "resumes at the next run")
                self.request_stop()
                raise Stopped from None

    def _await_done(self, future: Future[Any]) -> None:
        try:
            self._await(future)
        except Stopped:
            raise
        except BaseException:  # noqa: BLE001 - the caller reads the outcome
            pass

    def _release(self, works: list[Work], at_writer: int = 0) -> None:
        with self._inflight_lock:
            self.inflight.difference_update(w.entry.row.id for w in works)
            self._at_writer -= at_writer

    def _stage_done(self, stage: str, works: list[Work]) -> None:
        if self.listener is not None and works:
            try:
                self.listener("stage", {"stage": stage, "count": len(works),
                                        "last": display_path(works[-1].entry.row.path)})
            except Exception:
                log.exception("event listener failed")


def send_stop(outbox: Inbox) -> None:
    """Pass STOP on without blocking: the next stage may have ended already (the pipeline only stops
    when asked to, and then what the queues hold is dropped; it stays queued in the catalog)."""
    while True:
        try:
            outbox.put_nowait(STOP)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                outbox.get_nowait()


def get_nowait(inbox: Inbox) -> Any:
    try:
        return inbox.get(timeout=0.005)
    except queue.Empty:
        return None
