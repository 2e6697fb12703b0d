"""The long-lived indexing pipeline, fed by the catalog's work queue: an explicit list of stages.

    feed (queue rows, by priority) → decode (process pool) → batch (size or wait) → infer (model
        worker) → sidecar (process pool) → write (the writer thread commits)

Each stage is a thread; stages are joined by bounded queues, so a slow model holds decoding back
(back-pressure) and a single new file goes through at once (a partial batch waits `batch_wait`
seconds at most). A queue entry stays in the catalog until the writer commits its result, so a
crash at any moment leaves it queued and it is redone; ids in flight are not fed twice.

A file that cannot be read or decoded — or that kills its worker process — is recorded as failed
with the reason, and the rest goes on. A batch the model fails on is retried one file at a time
before any file is blamed. A model that cannot load (`ModelError`) stops the pipeline and blames
no file: their entries stay queued.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pixdex.indexer import faults
from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import ASKED, CHANGED, FileStat, QueueEntry
from pixdex.indexer.errors import InferenceError, ModelError, ReadError
from pixdex.indexer.paths import display_path
from pixdex.indexer.settings import Config
from pixdex.indexer.sidecars.state import SidecarState
from pixdex.indexer.pools import exit_reason
from pixdex.indexer.sidecars.keeper import SidecarKeeper, outcome
from pixdex.indexer.sidecars.tasks import SidecarSpec
from pixdex.indexer.inference import Inferred, ModelInfo, ModelSpec, infer
from pixdex.indexer.prepare import DecodeSpec, FromSidecar, Prepared, prepare
from pixdex.indexer.writer import Indexed, Writer

log = logging.getLogger(__name__)
STOP = object()  # passed down the stages when the pipeline stops


@dataclass
class Work:
    """One queue entry on its way through the stages."""

    entry: QueueEntry
    prepared: Prepared | None = None
    error: str | None = None
    embedding: Any = None
    tags: list[dict[str, object]] = field(default_factory=list)
    side: SidecarState | None = None
    vanished: bool = False  # the file was not at the path we had: moved or deleted meanwhile
    moved: bool = False  # it left its path after it was read (before its sidecar was written)
    parked: bool = False  # it vanished or moved: nothing committed, the entry stays queued (`Pipeline._park`)

    @property
    def needs_model(self) -> bool:
        return self.error is None and self.prepared is not None and self.prepared.clip_input is not None


@dataclass
class Stats:
    decoded: int = 0
    embedded: int = 0
    tagged: int = 0
    inference_calls: int = 0
    committed: int = 0
    touched: int = 0  # a new stat, the same content
    sidecars_read: int = 0  # only the sidecar changed: re-read, no decode, no model
    from_sidecars: int = 0  # embedding and keywords taken from the image's sidecar: no decode, no model
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    sidecar_failures: int = 0
    sidecar_errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    current: str = ""
    at: dict[str, str] = field(default_factory=dict)  # stage → the file it last took
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_time(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class Pipeline:
    def __init__(self, config: Config, info: ModelInfo, spec: ModelSpec, writer: Writer,
                 decode_pool: Any, infer_pool: Any, sidecars: SidecarKeeper) -> None:
        self.config = config
        self.info = info
        self.spec = spec
        self.writer = writer
        self.decode_pool = decode_pool
        self.infer_pool = infer_pool
        self.stats = Stats()
        self.fatal: BaseException | None = None
        self.inflight: set[int] = set()
        self._inflight_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.paused = threading.Event()  # set: nothing new is fed (what is in flight finishes)
        self.listener: Callable[[str, dict[str, Any]], None] | None = None  # the daemon's event stream
        self._threads: list[threading.Thread] = []
        window = config.decode.lookahead_batches * config.models.batch_size
        self._window = window
        self._queue_db = Catalog(writer.catalog.path, read_only=True)  # the feed's; idle() shares it
        self._queue_lock = threading.Lock()
        self.sidecars = sidecars
        # A file that vanished from its path may have moved: its entry stays queued, not fed again while its
        # path is still the one that vanished, for `vanish_grace` seconds (the daemon's scanner registers the
        # move meanwhile; then it is fed at its new path). Past that, a second vanish is its failure.
        # One whose library folder is gone as a whole (an unmounted disk) waits until it is back, as its row does.
        self.vanish_grace = 0.0
        self.library: Callable[[], list[bytes]] = lambda: []  # the watched folders (real paths)
        self._parked: dict[int, tuple[bytes, float]] = {}  # id → (the path that vanished, until when)
        self._second_try: set[int] = set()
        self._rekeyed: dict[int, int] = {}  # rows that took their sidecar's id as they committed (old → new)

    def stages(self) -> list[Callable[[queue.Queue[Any], queue.Queue[Any]], None]]:
        return [self.feed, self.decode, self.batch, self.infer, self.sidecar, self.write]

    def start(self) -> None:
        inbox: queue.Queue[Any] = queue.Queue()
        for stage in self.stages():
            outbox: queue.Queue[Any] = queue.Queue(maxsize=self._window)
            thread = threading.Thread(target=self._guard, args=(stage, inbox, outbox),
                                      name=f"pixdex-{stage.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
            inbox = outbox

    def wake(self) -> None:
        """New work was queued: feed it now."""
        self._wake.set()

    def request_stop(self) -> None:
        """Stop taking work: stages drop what they hold (it stays queued) and exit."""
        self._stopping.set()
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

    def _guard(self, stage: Callable[[queue.Queue[Any], queue.Queue[Any]], None],
               inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        try:
            stage(inbox, outbox)
        except BaseException as exc:  # a bug in a stage must not leave the others waiting forever
            if self._stopping.is_set():  # the pools were stopped under it: expected, nothing is lost
                log.debug("pipeline stage %s ended while stopping: %r", stage.__name__, exc)
                _send_stop(outbox)
                return
            log.exception("pipeline stage %s failed", stage.__name__)
            self.fatal = self.fatal or exc
            self._stopping.set()
            _send_stop(outbox)

    def _put(self, outbox: queue.Queue[Any], item: Any) -> bool:
        """Put with back-pressure, but give up when the pipeline stops."""
        while not self._stopping.is_set():
            try:
                outbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _await(self, future: Future[Any]) -> Any:
        """A worker's result; raises `_Stopped` when the pipeline stops first (a stopped pool's futures
        may never resolve, and what they say then is not the file's fault)."""
        while True:
            if self._stopping.is_set():
                raise _Stopped
            try:
                return future.result(timeout=0.1)
            except FutureTimeout:
                if future.done():
                    raise  # the task itself ran past its timeout
            except BrokenProcessPool as exc:  # every worker gone (SIGTERM to the group, OOM): no file's fault
                from pixdex.indexer.errors import PixdexError

                if not self._stopping.is_set():
                    self.fatal = self.fatal or PixdexError(
                        f"the worker processes stopped ({exc or 'broken pool'}); no file was blamed and the queue "
                        "resumes at the next run")
                self.request_stop()
                raise _Stopped from None

    def _await_done(self, future: Future[Any]) -> None:
        try:
            self._await(future)
        except _Stopped:
            raise
        except BaseException:  # noqa: BLE001 - the caller reads the outcome
            pass

    def _release(self, works: list[Work]) -> None:
        with self._inflight_lock:
            self.inflight.difference_update(w.entry.row.id for w in works)

    # Stage: the queue's next entries, most urgent first, never one already in flight.
    def feed(self, _inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        while not self._stopping.is_set():
            with self._inflight_lock:
                room = self._window * 2 - len(self.inflight)
                skip = set(self.inflight)
            if self.paused.is_set():
                self._wake.wait(0.25)
                self._wake.clear()
                continue
            with self._queue_lock:
                skip |= self._still_parked()
                entries = self._queue_db.queued(room, skip) if room > 0 and self.fatal is None else []
            if not entries:
                self._wake.wait(0.25)
                self._wake.clear()
                continue
            with self._inflight_lock:
                self.inflight.update(e.row.id for e in entries)
            for entry in entries:
                if not self._put(outbox, Work(entry)):
                    break
        _send_stop(outbox)

    def _still_parked(self) -> set[int]:
        """Parked ids still at the path that vanished, within their grace (under `_queue_lock`). One whose
        path changed (the scanner registered its move) or whose grace ran out is fed again: a second vanish
        past the grace is its failure."""
        if not self._parked:
            return set()
        now = time.monotonic()
        paths = self._queue_db.paths(list(self._parked))
        waiting = set()
        for image_id, (path, until) in list(self._parked.items()):
            if paths.get(image_id) == path and (now < until or not self._root_there(path)):
                waiting.add(image_id)
                continue
            del self._parked[image_id]
            if image_id in paths and paths[image_id] == path:
                self._second_try.add(image_id)
        return waiting

    def _park(self, work: Work) -> bool:
        """Keep the entry of a file that vanished (or moved after it was read) queued for a while, instead of
        failing it or committing what was read at a path it left (see `vanish_grace`)."""
        image_id = work.entry.row.id
        if self.vanish_grace <= 0 or image_id in self._second_try:
            self._second_try.discard(image_id)
            return False
        with self._queue_lock:
            self._parked[image_id] = (work.entry.row.path, time.monotonic() + self.vanish_grace)
            if not self._root_there(work.entry.row.path):
                log.info("%s waits for its folder to come back (unmounted?)", display_path(work.entry.row.path))
        log.debug("%s left its path while being indexed; waiting for the scanner to find where it went",
                  display_path(work.entry.row.path))
        return True

    def _root_there(self, path: bytes) -> bool:
        """Whether the watched folder `path` lies in is there (not an unmounted disk)."""
        roots = [r for r in self.library() if path.startswith(r.rstrip(b"/") + b"/")]
        return not roots or any(os.path.isdir(r) for r in roots)

    # Stage: read + hash + decode + preprocess in the process pool, results in order.
    def decode(self, inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        pending: deque[tuple[Work, Future[Prepared]]] = deque()
        timeout = self.config.decode.timeout
        while True:
            item = inbox.get() if not pending else _get_nowait(inbox)
            if item is STOP:
                break
            if item is not None:
                spec = DecodeSpec(self.info.min_side, self.config.decode.max_pixels, self.info.transform,
                                  self.info.tagger_size, self._known_hash(item.entry), self._from_sidecar(item.entry),
                                  self.info.dim)
                pending.append((item, self.decode_pool.schedule(prepare, (item.entry.row.path, spec), timeout=timeout)))
                self.stats.at["decode"] = display_path(item.entry.row.path)
            if pending and (item is None or len(pending) >= self._window or pending[0][1].done()):
                work, future = pending.popleft()
                self._finish_decode(work, future)
                if self._stopping.is_set() or not self._put(outbox, work):
                    break
        for work, future in pending:
            future.cancel()
        _send_stop(outbox)

    def _known_hash(self, entry: QueueEntry) -> str | None:
        """The hash under which unchanged content may skip decoding — never for a file a person asked for,
        nor without models for one waiting for them (its sidecar may hold what models made elsewhere)."""
        row = entry.row
        if entry.priority == ASKED or (not self.info.has_models and row.clip_model is None):
            return None
        return row.hash if row.current_for(self.info.ids) else None

    def _from_sidecar(self, entry: QueueEntry) -> FromSidecar | None:
        """Let the decoder take the embedding and keywords a sidecar carries for the current models — never
        for a file a person asked to redo. Without models, any keywords, and an embedding by any export of the
        configured CLIP model (what a library indexed elsewhere, or before a rebuild, carries)."""
        settings = self.config.sidecar
        if not self.info.has_models:
            return FromSidecar(self.config.models.clip, "", settings.tag_parent, settings.naming, by_name=True)
        if entry.priority == ASKED:
            return None
        return FromSidecar(self.info.clip_id, self.info.tagger_id or self.info.clip_id, settings.tag_parent,
                           settings.naming)

    def _finish_decode(self, work: Work, future: Future[Prepared]) -> None:
        from pebble import ProcessExpired

        start = time.perf_counter()
        try:
            work.prepared = self._await(future)
        except _Stopped:
            raise
        except ReadError as exc:
            work.error = exc.reason
        except ProcessExpired as exc:
            work.error = f"the decoder process died on this file ({exit_reason(exc.exitcode)})"
        except FutureTimeout:
            work.error = f"decoding took longer than decode.timeout = {self.config.decode.timeout:g} s"
        except OSError as exc:  # vanished, unreadable, name too long: this file's failure
            work.error = f"cannot read file: {exc.strerror or exc}"
            work.vanished = isinstance(exc, FileNotFoundError)
        except Exception as exc:  # a hostile file must never stop the run
            log.warning("unexpected error decoding %s: %r", display_path(work.entry.row.path), exc)
            work.error = f"unexpected {type(exc).__name__}: {exc}"
        self.stats.add_time("decode wait", time.perf_counter() - start)
        if work.prepared is not None and work.prepared.from_sidecar:  # carried by its sidecar
            work.embedding = work.prepared.embedding
            work.tags = [{"name": t, "confidence": 1.0, "category": "general"} for t in work.prepared.machine_tags]
            with self.stats.lock:
                self.stats.from_sidecars += 1
        elif work.prepared is not None and not work.prepared.same_content:
            with self.stats.lock:
                self.stats.decoded += 1
        if work.prepared is not None and work.prepared.warnings:
            log.debug("%s: %s", display_path(work.entry.row.path), work.prepared.warnings)

    # Stage: group images for the model; flush on size, or once the first has waited batch_wait.
    def batch(self, inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        size, wait = self.config.models.batch_size, self.config.pipeline.batch_wait
        current: list[Work] = []
        deadline = 0.0
        while True:
            try:
                item = inbox.get(timeout=max(0.0, deadline - time.monotonic()) if current else None)
            except queue.Empty:
                item = None
            if item is STOP:
                break
            if item is not None:
                if not current:
                    deadline = time.monotonic() + wait
                current.append(item)
            if current and (len(current) >= size or time.monotonic() >= deadline):
                if not self._put(outbox, current):
                    current = []  # stopping: what it held stays queued in the catalog
                    break
                current = []
        if current:
            self._put(outbox, current)
        _send_stop(outbox)  # however it ends: the next stage waits on its inbox for this

    # Stage: the model worker embeds and tags; a failed batch is retried one file at a time.
    def infer(self, inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        while (batch := inbox.get()) is not STOP:
            ready = [w for w in batch if w.needs_model]
            if self._stopping.is_set():
                break
            if ready and self.fatal is None:
                self.stats.at["infer"] = display_path(ready[-1].entry.row.path)
                faults.hold("infer", [w.entry.row.path for w in ready])
                start = time.perf_counter()
                try:
                    self._infer(ready)
                except ModelError as exc:  # the model's fault: stop, blame no file, keep them queued
                    self.fatal = exc
                    self._stopping.set()
                self.stats.add_time("infer", time.perf_counter() - start)
                self._stage_done("infer", ready)
            if self.fatal is not None:
                self._release(batch)
                continue
            if not self._put(outbox, batch):
                break
        _send_stop(outbox)

    def _infer(self, ready: list[Work]) -> None:
        try:
            self._run_model(ready)
        except (InferenceError, _WorkerDied) as exc:
            if len(ready) == 1:
                ready[0].error = str(exc)
                return
            if self._stopping.is_set():
                return
            log.warning("a batch of %d failed (%s); retrying one file at a time", len(ready), exc)
            for work in ready:
                try:
                    self._run_model([work])
                except (InferenceError, _WorkerDied) as single:
                    work.error = str(single)

    def _run_model(self, works: list[Work]) -> None:
        from pebble import ProcessExpired

        clip = np.stack([w.prepared.clip_input for w in works])  # type: ignore[union-attr]
        tags = np.stack([w.prepared.tag_input for w in works]) if self.info.tagger_size else None  # type: ignore[union-attr]
        try:
            result: Inferred = self._await(self.infer_pool.schedule(infer, (self.spec, clip, tags)))
        except ProcessExpired as exc:
            raise _WorkerDied(f"the inference process died on this file ({exit_reason(exc.exitcode)})") from exc
        except InferenceError as exc:
            raise InferenceError(f"model failed on this file: {exc}") from exc
        with self.stats.lock:
            self.stats.embedded += len(works)
            self.stats.tagged += len(works) if tags is not None else 0
            self.stats.inference_calls += result.calls
        for n, work in enumerate(works):
            work.embedding = result.embeddings[n]
            work.tags = result.tags[n]

    # Stage: merge the tags into each image's sidecar and read what it says now, in the process pool.
    def sidecar(self, inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        while (batch := inbox.get()) is not STOP:
            if self._stopping.is_set():
                break
            start = time.perf_counter()
            with self.sidecars.io:
                done = self._write_sidecars(batch)
            self.stats.add_time("sidecar", time.perf_counter() - start)
            self._stage_done("sidecar", done)
            if not self._put(outbox, batch):
                break
        _send_stop(outbox)

    def _write_sidecars(self, batch: list[Work]) -> list[Work]:
        """Merge and read each image's sidecar, for images still at their path (under `sidecars.io`). One that
        left it before its write is marked `moved`: its sidecar is written at its new path when its entry comes
        round again. One that moves during the write leaves what was written at the old path, which the scanner
        carries over with the move."""
        done = [w for w in batch if w.error is None and w.prepared is not None]
        for work in done:
            work.moved = _gone(work.entry.row.path)
        done = [w for w in done if not w.moved]
        self.sidecars.merging(w.entry.row.path for w in done)
        futures = [self.sidecars.merge(w.entry.row.path, *self._tags_of(w), self.sidecar_spec(w), self._embedding_of(w),
                                       self._id_of(w)) for w in done]
        for work, future in zip(done, futures, strict=True):
            try:
                self._await_done(future)
            finally:
                self.sidecars.merged(work.entry.row.path)
            work.side = outcome(future, work.entry.row.path)
            work.moved = _gone(work.entry.row.path)
            self._after_sidecar(work)
        return done

    def _id_of(self, work: Work) -> int:
        """The id the sidecar records: a new row's sidecar keeps the id it carries when that is free (the writer
        gives the row that id as it commits: `Writer._takes_sidecar_id`)."""
        row, wanted = work.entry.row, work.prepared.sidecar_id if work.prepared else None
        if wanted is None or row.state != "pending" or row.hash is not None:
            return row.id
        with self._queue_lock:
            return row.id if self._queue_db.paths([wanted]) else wanted

    def _after_sidecar(self, work: Work) -> None:
        side = work.side
        assert side is not None
        if not self.sidecars.settle(work.entry.row.path, side):  # another program wrote it after pixdex did
            self.writer.enqueue([work.entry.row.id], CHANGED, "sidecar changed", again=True)  # read it again
        if side.error:
            with self.stats.lock:
                self.stats.sidecar_failures += 1
                self.stats.sidecar_errors.append(f"{display_path(work.entry.row.path)}: {side.error}")

    def sidecar_spec(self, work: Work | None = None) -> SidecarSpec:
        """The sidecar jobs' spec for `work` (None: not the pipeline's: a move, a deletion, an edit): pixdex's
        keywords are written only with what models made — for fresh results, or content whose row has model
        results (`SidecarKeeper.spec`)."""
        made_by_models = work is None or work.embedding is not None or (
            work.prepared is not None and work.prepared.same_content and work.entry.row.clip_model is not None)
        return self.sidecars.spec(made_by_models, embedded=work is not None)

    def _embedding_of(self, work: Work) -> tuple[str, str, Any] | None:
        """The embedding to store in the sidecar: the fresh one, or for known content the catalog's (a sidecar
        deleted meanwhile gets it back)."""
        if not self.config.sidecar.embedding or work.prepared is None:
            return None
        vector = work.embedding
        if vector is None and work.prepared.same_content and work.entry.row.clip_model == self.info.clip_id:
            with self._queue_lock:
                found = dict(self._queue_db.embeddings(self.info.clip_id, ids=[work.entry.row.id]))
            vector = found.get(work.entry.row.id)
        return None if vector is None else (self.info.clip_id, work.prepared.digest, vector)

    # daemon/runtime.edit_item reaches the sidecar rules through these two (and `sidecar_spec`)
    @property
    def sidecar_io(self) -> threading.Lock:
        return self.sidecars.io

    def remember_own(self, path: bytes, side: SidecarState) -> None:
        self.sidecars.remember(path, side)

    @staticmethod
    def _tags_of(work: Work) -> tuple[list[str], list[str]]:
        """The machine keywords to merge (the fresh ones, or the row's for known content) and the rejected.
        Fresh tags of content the vision LLM described keep its keywords: the description stands."""
        row = work.entry.row
        tags = work.tags if work.embedding is not None else row.machine_tags
        names = [str(t["name"]) for t in tags]
        if work.embedding is not None and row.described and work.prepared is not None \
                and row.hash == work.prepared.digest:
            have = {n.casefold() for n in names}
            names += [str(t["name"]) for t in row.machine_tags
                      if t.get("source") == "llm" and str(t["name"]).casefold() not in have]
        return names, row.rejected_list

    # Stage: hand the results to the writer; entries leave the flight once committed.
    def write(self, inbox: queue.Queue[Any], _outbox: queue.Queue[Any]) -> None:
        while (batch := inbox.get()) is not STOP:
            futures: list[Future[Any]] = []
            indexed = []
            for work in batch:
                entry, prepared = work.entry, work.prepared
                if prepared is not None and work.side is not None and work.side.image_stat is not None:
                    dev, ino, size, mtime_ns = work.side.image_stat  # pixdex wrote the image's own XMP
                    prepared.stat = FileStat(prepared.stat.path, dev, ino, size, mtime_ns)
                    prepared.digest = work.side.image_digest or prepared.digest
                if (work.vanished or work.moved) and self._park(work):
                    work.parked = True
                    continue  # stays queued: fed again at its new path once the scanner registers the move
                self._second_try.discard(entry.row.id)
                if work.error is not None:
                    stat = prepared.stat if prepared else None
                    failed = self.writer.fail(entry.row.id, entry.seq, stat, prepared.digest if prepared else None,
                                              work.error, tried=entry.row.path if work.vanished else None)
                    failed.add_done_callback(lambda f, w=work: self._count_failure(f, w))
                    futures.append(failed)
                elif prepared is not None and prepared.same_content:
                    futures.append(self.writer.touch(entry.row.id, entry.seq, prepared.stat, prepared.digest,
                                                     work.side))
                    with self.stats.lock:
                        if entry.reason == "sidecar changed":
                            self.stats.sidecars_read += 1
                        else:
                            self.stats.touched += 1
                elif prepared is not None:
                    indexed.append(Indexed(entry.row.id, entry.seq, prepared.stat, prepared.digest,
                                           prepared.width, prepared.height, prepared.exif.taken,
                                           prepared.exif.camera, work.tags, work.embedding, prepared.embedded,
                                           work.side, prepared.exif.as_dict(),
                                           prepared.models if prepared.from_sidecar else self.info.ids,
                                           prepared.sidecar_id))
            if indexed:
                faults.hold("commit", [item.stat.path for item in indexed])
                stored = self.writer.store(indexed)
                stored.add_done_callback(self._note_rekeyed)  # before `_when_all`'s: `_tell` names the new ids
                futures.append(stored)
            self.stats.current = display_path(batch[-1].entry.row.path) if batch else ""
            _when_all(futures, lambda ok, b=batch, n=len(indexed): self._committed(b, n, ok))

    def _note_rekeyed(self, future: Future[Any]) -> None:
        if future.exception() is None and future.result():
            with self._inflight_lock:
                self._rekeyed.update(future.result())

    def _tell(self, batch: list[Work]) -> None:
        listener = self.listener
        if listener is None:
            return
        try:
            for work in [w for w in batch if not w.parked]:
                with self._inflight_lock:
                    image_id = self._rekeyed.pop(work.entry.row.id, work.entry.row.id)
                data = {"id": image_id, "path": display_path(work.entry.row.path)}
                if work.error is not None:
                    listener("failed", {**data, "reason": work.error})
                else:
                    rejected = {*work.entry.row.rejected_list, *(work.side.rejected if work.side else [])}
                    listener("indexed", {**data, "embedded": work.embedding is not None,
                                         "tags": [str(t["name"]) for t in work.tags if str(t["name"]) not in rejected]})
        except Exception:  # a listener's bug must not stop indexing
            log.exception("event listener failed")

    def _stage_done(self, stage: str, works: list[Work]) -> None:
        if self.listener is not None and works:
            try:
                self.listener("stage", {"stage": stage, "count": len(works),
                                        "last": display_path(works[-1].entry.row.path)})
            except Exception:
                log.exception("event listener failed")

    def _count_failure(self, future: Future[Any], work: Work) -> None:
        if future.exception() is None and future.result():  # False: it moved meanwhile, tried again
            with self.stats.lock:
                self.stats.failed += 1
                self.stats.failures.append((display_path(work.entry.row.path), work.error or ""))

    def _committed(self, batch: list[Work], stored: int, ok: bool) -> None:
        if ok:
            with self.stats.lock:
                self.stats.committed += stored
            self._tell(batch)
        else:  # the catalog refuses writes (disk full, …): stop rather than redo the same work forever
            from pixdex.indexer.errors import PixdexError

            self.fatal = self.fatal or PixdexError(f"{self.writer.catalog.path}: cannot commit results; see the log")
            self._stopping.set()
        self._release(batch)
        self._wake.set()


class _WorkerDied(Exception):
    pass


class _Stopped(Exception):
    """The pipeline stopped while a stage waited on a worker."""


def _gone(path: bytes) -> bool:
    """Whether nothing is at `path` any more (moved or deleted). Another file there (an editor's save renamed
    over it) is a change the scanner queues again: what is in flight commits, and its turn comes again."""
    return not os.path.lexists(path)


def _when_all(futures: list[Future[Any]], callback: Callable[[bool], None]) -> None:
    if not futures:
        callback(True)
        return
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(future: Future[Any]) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            callback(all(f.exception() is None for f in futures))

    for future in futures:
        future.add_done_callback(one_done)


def _send_stop(outbox: queue.Queue[Any]) -> None:
    """Pass STOP on without blocking: the next stage may have ended already (the pipeline only stops
    when asked to, and then what the queues hold is dropped; it stays queued in the catalog)."""
    while True:
        try:
            outbox.put_nowait(STOP)
            return
        except queue.Full:
            try:
                outbox.get_nowait()
            except queue.Empty:
                pass


def _get_nowait(inbox: queue.Queue[Any]) -> Any:
    try:
        return inbox.get(timeout=0.005)
    except queue.Empty:
        return None
