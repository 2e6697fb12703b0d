"""The long-lived indexing pipeline, fed by the catalog's work queue: an explicit list of stages.

    feed (queue rows, by priority) → decode (process pool) → batch (size or wait) → infer (model
        worker) → sidecar (process pool) → write (the writer thread commits)

one module each in `indexer/stages/`, combined here (`Pipeline.stages` is the list).

Each stage is a thread; stages are joined by bounded queues, so a slow model holds decoding back
(back-pressure) and a single new file goes through at once: a partial batch waits `batch_wait` seconds
at most, and not at all when nothing else is on its way; the writer commits at once when everything in
flight waits for it. A queue entry stays in the catalog until the writer commits its result, so a
crash at any moment leaves it queued and it is redone; ids in flight are not fed twice.

A file that cannot be read or decoded — or that kills its worker process — is recorded as failed
with the reason, and the rest goes on. A batch the model fails on is retried one file at a time
before any file is blamed. A model that cannot load (`ModelError`) stops the pipeline and blames
no file: their entries stay queued.
"""

from __future__ import annotations

import logging
import queue
import threading

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.inference import ModelInfo, ModelSpec
from pixdex.indexer.pools import Pool
from pixdex.indexer.settings import Config
from pixdex.indexer.sidecars.keeper import SidecarKeeper
from pixdex.indexer.sidecars.state import SidecarState
from pixdex.indexer.stages.batch import Batch
from pixdex.indexer.stages.decode import Decode
from pixdex.indexer.stages.feed import Feed
from pixdex.indexer.stages.flow import Inbox, Stage, send_stop
from pixdex.indexer.stages.infer import Infer
from pixdex.indexer.stages.parking import Parking
from pixdex.indexer.stages.sidecar import Sidecar
from pixdex.indexer.stages.stats import Stats
from pixdex.indexer.stages.write import Write
from pixdex.indexer.writer import Writer

log = logging.getLogger(__name__)


class Pipeline(Feed, Decode, Batch, Infer, Sidecar, Write):
    def __init__(self, config: Config, info: ModelInfo, spec: ModelSpec, writer: Writer,
                 decode_pool: Pool, infer_pool: Pool, sidecars: SidecarKeeper) -> None:
        self.config = config
        self.info = info
        self.spec = spec
        self.writer = writer
        self.decode_pool = decode_pool
        self.infer_pool = infer_pool
        self.stats = Stats()
        self.fatal = None
        self.inflight = set()
        self._inflight_lock = threading.Lock()
        self._upstream = 0
        self._starved = False  # the feed's last look found nothing it could feed
        self._at_writer = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.paused = threading.Event()  # set: nothing new is fed (what is in flight finishes)
        self.listener = None
        self._threads: list[threading.Thread] = []
        self._window = config.decode.lookahead_batches * config.models.batch_size
        self._queue_db = Catalog(writer.catalog.path, read_only=True)  # the feed's; idle() shares it
        self._queue_lock = threading.Lock()
        self.sidecars = sidecars
        self.parking = Parking()  # files that vanished on the way (`Indexer` sets their grace and the library)
        self._rekeyed = {}
        writer.after_commit = self.wake  # queued work, room in the flight: the feed looks again

    def stages(self) -> list[Stage]:
        return [self.feed, self.decode, self.batch, self.infer, self.sidecar, self.write]

    def start(self) -> None:
        inbox: Inbox = queue.Queue()
        for stage in self.stages():
            outbox: Inbox = queue.Queue(maxsize=self._window)
            thread = threading.Thread(target=self._guard, args=(stage, inbox, outbox),
                                      name=f"pixdex-{stage.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
            inbox = outbox

    def wake(self) -> None:
        """New work was queued: feed it now."""
        self._wake.set()

    def stop(self) -> None:
        self.request_stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self._queue_db.close()

    def idle(self) -> bool:
        """No queue entry is waiting and none is in flight (or the pipeline stopped on an error, or is
        paused with nothing in flight)."""
        with self._inflight_lock:
            if self.inflight:
                return False
            if self.paused.is_set():
                return True
        with self._queue_lock:
            return self.fatal is not None or not self._queue_db.queued(1)

    def quiet(self) -> bool:
        """Nothing in flight and the feed found nothing to feed when it last looked (no catalog query: the
        scanner asks this every time it goes to sleep)."""
        with self._inflight_lock:
            return not self.inflight and self._starved

    def _guard(self, stage: Stage, inbox: Inbox, outbox: Inbox) -> None:
        try:
            stage(inbox, outbox)
        except BaseException as exc:  # a bug in a stage must not leave the others waiting forever
            if self._stopping.is_set():  # the pools were stopped under it: expected, nothing is lost
                log.debug("pipeline stage %s ended while stopping: %r", stage.__name__, exc)
                send_stop(outbox)
                return
            log.exception("pipeline stage %s failed", stage.__name__)
            self.fatal = self.fatal or exc
            self._stopping.set()
            send_stop(outbox)

    # daemon/runtime.edit_item reaches the sidecar rules through these two (and `sidecar_spec`)
    @property
    def sidecar_io(self) -> threading.Lock:
        return self.sidecars.io

    def remember_own(self, path: bytes, side: SidecarState) -> None:
        self.sidecars.remember(path, side)
