"""What `pixdex serve` keeps running: the indexing core, the watcher and one scanner thread.

The scanner thread is the only caller of the core's scan: it turns the watcher's dirty folders,
the periodic (randomised) reconcile, `reindex` requests, config reloads and added or removed
collections into catalog changes, one at a time, so two diffs never race. Everything else the
core does on its own threads and worker processes; the event loop only reads and submits.

Without models the core runs in reduced mode; this thread looks for them every few seconds and
reopens the core when they appear (or the config changes), and the images that waited are then
queued as backfill.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pixdex.daemon.core_api import Unavailable
from pixdex.daemon.events import Bus
from pixdex.daemon.model_pull import ModelPull
from pixdex.daemon.progress import progress_of
from pixdex.daemon.stored import model_fix
from pixdex.daemon.watcher import Watcher
from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import ImageRow
from pixdex.indexer.collections import (
    Collection,
    CollectionError,
    all_collections,
    plan_add,
    removable,
)
from pixdex.indexer.core import Indexer, ScanReport
from pixdex.indexer.layout import CLIP_FILES
from pixdex.indexer.modelcache import return_freed_memory
from pixdex.indexer.paths import display_path
from pixdex.indexer.pools import IdlePool
from pixdex.indexer.settings import Config
from pixdex.indexer.sidecars.tasks import edit_sidecar, identity

log = logging.getLogger(__name__)
T = TypeVar("T")

TICK = 0.2  # the scanner thread's longest sleep while the pipeline has work (it samples the rate)
IDLE_SLEEP = 60.0  # its longest sleep while nothing is queued or in flight: file events and jobs wake it
CHECK_EVERY = 5.0  # seconds between looks for models and for watched folders that came back
VANISH_GRACE = 30.0  # seconds a file that left its path while queued waits for the watcher to say where it went


@dataclass
class Job:
    """Work for the scanner thread (a reconcile, a scan, a reindex, a reload, a watch added or removed)."""

    run: Callable[[], Any]
    future: Future[Any]


class Daemon:
    def __init__(self, config: Config, bus: Bus, holder: int | None = None) -> None:
        self.config = config
        self.holder = holder  # the serving process's pid, written in the data directory's lock
        self.bus = bus
        self.started = time.time()
        self.indexer: Indexer | None = None
        self.collections: list[Collection] = []
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_reconcile = 0.0
        self._next_check = 0.0
        self._quiet = False  # the pipeline was quiet at the scanner's last step
        self._done: deque[tuple[float, int]] = deque(maxlen=600)  # (time, files finished) for the rate
        self.last_scan: dict[str, Any] = {}
        self.scanning = ""
        self._told_unreadable: set[str] = set()  # folders a scan could not read, logged once each (status lists them)
        self.on_collections: Callable[[list[Collection]], None] | None = None  # told of every change
        self.pull = ModelPull(config, bus, landed=self._look_now)  # the first start's models
        self._failed_models: tuple[tuple[str, int, int], ...] | None = None  # files that did not load
        self.watcher = Watcher(config.watch, config.library.skip_dirs, config.library.exclude,
                               [os.fsencode(os.path.realpath(config.data_dir))], self._lost_events)
        self.watcher.on_activity = self._warm_up

    # Lifecycle --------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the core (reduced mode without models) and start watching; the first reconcile is queued."""
        self._open_indexer()
        self._refresh_roots()
        self.submit(partial(self._reconcile, "start"))
        self._thread = threading.Thread(target=self._run, name="pixdex-scanner", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching and scanning, then let the core commit what is finished and save its indexes."""
        self._stop.set()
        self.watcher.poke()
        self.watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.indexer is not None:
            self.indexer.close()
            self.indexer = None

    def _open_indexer(self) -> None:
        self._done.clear()  # the core's counters start again: the rate is over this core's work only
        indexer = Indexer(self.config, reduced="if unloadable", holder=self.holder, describe=True, backfill=True,
                          read_text=True, paused=bool(self._catalog_meta("paused")), vanish_grace=VANISH_GRACE)
        self._failed_models = None if indexer.info.has_models else _model_files(self.config)
        indexer.pipeline.listener = self._pipeline_event
        self.indexer = indexer
        if not indexer.info.has_models:
            log.warning("reduced mode (names, folders and metadata are indexed; images wait for models): %s",
                        indexer.info.missing)

    @property
    def model_fix(self) -> str:
        return model_fix(self.config)

    def _catalog_meta(self, key: str) -> int:
        if not self.config.layout.exists():
            return 0
        catalog = Catalog(self.config.layout.catalog, read_only=True)
        try:
            return catalog.meta(key)
        finally:
            catalog.close()

    # Requests (any thread) --------------------------------------------------------------------
    def submit(self, run: Callable[[], T]) -> Future[T]:
        """Run `run` on the scanner thread, after what it is doing: two diffs never race."""
        future: Future[T] = Future()
        self._jobs.put(Job(run, future))
        self.watcher.poke()
        return future

    def reindex(self, paths: list[Path]) -> int:
        return self.submit(partial(self._reindex, paths)).result()

    def reload(self, config: Config) -> dict[str, Any]:
        return self.submit(partial(self._reload, config)).result()

    def watch_add(self, path: Path, name: str | None) -> dict[str, str]:
        return self.submit(partial(self._watch_add, path, name)).result()

    def watch_remove(self, key: str) -> dict[str, Any]:
        return self.submit(partial(self._watch_remove, key)).result()

    def pause(self, paused: bool) -> None:
        """Stop (or restart) feeding the pipeline; remembered in the catalog across restarts."""
        indexer = self._core()
        (indexer.pipeline.paused.set if paused else indexer.pipeline.paused.clear)()
        done = indexer.writer.submit(lambda catalog, gen: catalog.set_meta("paused", int(paused)))
        indexer.writer.flush()
        done.result()
        indexer.pipeline.wake()
        self.bus.publish("paused" if paused else "resumed")

    @property
    def paused(self) -> bool:
        return self.indexer is not None and self.indexer.pipeline.paused.is_set()

    def _core(self) -> Indexer:
        if self.indexer is None:
            raise Unavailable("the indexing core is reopening; try again in a moment")
        return self.indexer

    def row(self, image_id: int) -> ImageRow:
        """The item's catalog row as committed; Unavailable when it is gone."""
        catalog = Catalog(self.config.layout.catalog, read_only=True)
        try:
            row = catalog.get(image_id)
        finally:
            catalog.close()
        if row is None:
            raise Unavailable(f"item {image_id} is gone")
        return row

    # The scanner thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # this thread must outlive any one failure
                log.exception("scanner step failed; going on")
                self._stop.wait(1.0)

    def _step(self) -> None:
        try:
            job = self._jobs.get_nowait()
        except queue.Empty:
            job = None
        if job is not None:
            self._do(job)
            return
        dirty = self.watcher.take(self._sleep())
        if dirty:
            self._scan(sorted(dirty.deep | dirty.shallow), sorted(dirty.shallow), "changed")
        now = time.monotonic()
        if self.config.watch.reconcile and now >= self._next_reconcile:
            self.submit(partial(self._reconcile, "periodic"))
        if now >= self._next_check:
            self._next_check = now + CHECK_EVERY
            self._check()
        self._done.append((time.monotonic(), self._finished()))

    def _sleep(self) -> float:
        """How long the scanner may wait for file events: TICK while indexing (the progress rate is sampled
        each step), else until the next check or reconcile is due — no wake-ups when there is nothing to do."""
        indexer = self.indexer
        if indexer is None or not indexer.pipeline.quiet():
            self._quiet = False
            return TICK
        if not self._quiet:  # a burst of work just ended: give back what its threads freed (glibc keeps it)
            self._quiet = True
            gc.collect()
            return_freed_memory()
        due = min(self._next_check, self._next_reconcile if self.config.watch.reconcile else math.inf)
        return max(0.0, min(IDLE_SLEEP, due - time.monotonic()))

    def _warm_up(self) -> None:
        """Files are changing: start the worker processes that exited while idle now, during the debounce, not
        when the first file reaches them (their start-up is seconds of that file's freshness)."""
        indexer = self.indexer
        if indexer is None:
            return
        pools = [p for p in (indexer.decode_pool, indexer.infer_pool) if isinstance(p, IdlePool) and not p.alive]
        for pool in pools:
            threading.Thread(target=pool.start, name="pixdex-warm-up", daemon=True).start()

    def _do(self, job: Job) -> None:
        try:
            job.future.set_result(job.run())
        except Exception as exc:
            if not isinstance(exc, (CollectionError, ValueError)):
                log.exception("scanner job failed")
            job.future.set_exception(exc)

    def _reconcile(self, why: str) -> ScanReport:
        """Diff every watched folder against the catalog (at start, periodically, after lost events)."""
        low, high = 0.75 * self.config.watch.reconcile, 1.25 * self.config.watch.reconcile
        self._next_reconcile = time.monotonic() + random.uniform(low, high)
        roots = [c.path for c in self.collections if os.path.isdir(c.path)]
        log.info("reconciling %d folder(s): %s", len(roots), why)
        return self._scan(roots, [], why)

    def _scan(self, roots: list[bytes], shallow: list[bytes], why: str) -> ScanReport:
        indexer = self._core()
        self.scanning = why
        try:
            report = indexer.scan(roots, shallow)
        finally:
            self.scanning = ""
        self.last_scan = {"why": why, "at": time.time(), "new": report.new, "changed": report.changed,
                          "moved": report.moved, "removed": report.removed, "queued": report.queued}
        if report.new or report.changed or report.moved or report.removed or report.queued:
            self.bus.publish("queued", **self.last_scan)
        if report.new or report.changed or report.moved or report.removed or report.sidecars:  # not files still queued
            log.info("%s: %d new, %d changed, %d moved, %d removed, %d edited sidecar(s)", why, report.new,
                     report.changed, report.moved, report.removed, report.sidecars)
        for path, reason in report.folder_errors:
            if path not in self._told_unreadable:  # once, not at every scan: `pixdex status` lists them all
                self._told_unreadable.add(path)
                log.warning("%s: %s", path, reason)
        return report

    def _reindex(self, paths: list[Path]) -> int:
        indexer = self._core()
        if not paths:
            paths = [c.fspath for c in self.collections]
        count = indexer.reindex(paths)
        self.bus.publish("queued", why="reindex", queued=count, priority="asked")
        return count

    def _reload(self, config: Config) -> dict[str, Any]:
        """A new config (SIGHUP): roots added or removed take effect; other changes reopen the core."""
        old_roots = {c.path for c in self.collections}
        core_changed = _core_settings(config) != _core_settings(self.config)
        self.config = config
        self.watcher.settings = config.watch
        self.watcher.skip, self.watcher.exclude = config.library.skip_dirs, config.library.exclude
        if core_changed:
            self._reopen("the config changed")
            self.submit(partial(self._reconcile, "the config changed"))  # a new model: all of them are backfill
        self._refresh_roots()
        new_roots = {c.path for c in self.collections}
        self._forget(old_roots - new_roots)
        if new_roots - old_roots:
            self._scan(sorted(new_roots - old_roots), [], "folders added")
        self.bus.publish("config", added=[display_path(p) for p in new_roots - old_roots],
                         removed=[display_path(p) for p in old_roots - new_roots], reopened=core_changed)
        return {"added": len(new_roots - old_roots), "removed": len(old_roots - new_roots), "reopened": core_changed}

    def _reopen(self, why: str) -> None:
        log.info("reopening the indexing core: %s", why)
        if self.indexer is not None:
            self.indexer.close()
            self.indexer = None
        self._open_indexer()
        self._refresh_roots()

    def _watch_add(self, path: Path, name: str | None) -> dict[str, str]:
        added = plan_add(self.collections, path, name)
        indexer = self._core()

        done = indexer.writer.submit(lambda catalog, gen: catalog.add_collection(added.name, added.path))
        indexer.writer.flush()
        done.result()
        self._refresh_roots()
        self._scan([added.path], [], f"collection {added.name} added")
        self.bus.publish("watch", added=added.name, path=display_path(added.path))
        return added.as_dict()

    def _watch_remove(self, key: str) -> dict[str, Any]:
        collection = removable(self.collections, key, self.config.source)
        indexer = self._core()
        done = indexer.writer.submit(lambda catalog, gen: catalog.remove_collection(collection.name))
        indexer.writer.flush()
        done.result()
        self._refresh_roots()
        forgotten = self._forget({collection.path})
        self.bus.publish("watch", removed=collection.name, path=display_path(collection.path))
        return {**collection.as_dict(), "forgotten": forgotten}

    def edit_item(self, image_id: int, add: list[str], remove: list[str], description: str | None,
                  rating: int | None = None, label: str | None = None) -> None:
        """A person's edit: the sidecar first (in a worker), then the catalog re-reads what it says — tags and
        searchable text — without decoding or inference. Raises SidecarError when it cannot be written."""
        indexer = self._core()
        row = self.row(image_id)
        with indexer.pipeline.sidecar_io:  # not while the scanner carries this image's sidecar to a new path
            if not os.path.lexists(row.path):
                raise Unavailable(f"{display_path(row.path)} has just moved or gone; try again in a moment")
            side = indexer.decode_pool.schedule(edit_sidecar, (row.path, add, remove, description,
                                                               indexer.pipeline.sidecar_spec(), rating, label,
                                                               identity(row)),
                                                timeout=60).result()
        indexer.pipeline.remember_own(row.path, side)
        done = indexer.writer.sidecar_read(image_id, side)
        indexer.writer.flush()
        done.result()
        self.bus.publish("indexed", id=image_id, path=display_path(row.path), edited=True)

    def _forget(self, roots: set[bytes]) -> int:
        if not roots:
            return 0
        count = self._core().forget([Path(os.fsdecode(r)) for r in roots], [c.path for c in self.collections])
        if count:
            self.bus.publish("removed", count=count, why="no longer watched")
        return count

    def _refresh_roots(self) -> None:
        catalog = Catalog(self.config.layout.catalog, read_only=True)
        try:
            self.collections = all_collections(self.config, catalog)
        finally:
            catalog.close()
        roots = [c.path for c in self.collections]
        self._core().library = [Path(os.fsdecode(r)) for r in roots]
        self.watcher.watch(roots)
        if self.on_collections is not None:
            self.on_collections(self.collections)

    def _check(self) -> None:
        """Watched folders that came back, and folders that can be read again, are rescanned; models that
        appeared end reduced mode."""
        for root in self.watcher.check():
            self.submit(partial(self._scan, [root], [], "folder came back"))
        for folder in self._readable_again():
            self.submit(partial(self._scan, [folder], [], "folder can be read again"))
        indexer = self._core()
        if indexer.pipeline.fatal is not None:
            log.error("the indexing core stopped (%s); reopening it", indexer.pipeline.fatal)
            self._reopen("it stopped on an error")
            self.submit(partial(self._reconcile, "after reopening"))
        elif (not indexer.info.has_models and _models_present(self.config)
              and _model_files(self.config) != self._failed_models):
            self._reopen("models appeared")
            self.bus.publish("models", state="loaded", clip=self._core().info.clip_id)
            self.submit(partial(self._reconcile, "models appeared"))
        elif not indexer.info.has_models and self.pull.due():
            self.pull.start()

    def _look_now(self) -> None:
        self._next_check = 0.0  # the models landed: reopen at the next step, not in 5 s
        self.watcher.poke()

    def _readable_again(self) -> list[bytes]:
        """Folders a scan could not read (chmod 000, a permission lost) that can be listed now: what changed in
        them meanwhile was not seen, not even by the watcher."""
        if not self.config.layout.exists():
            return []
        catalog = Catalog(self.config.layout.catalog, read_only=True)
        try:
            unreadable = catalog.folder_errors()
        finally:
            catalog.close()
        again = []
        for folder, _reason in unreadable:
            try:
                os.listdir(folder)
            except OSError:
                continue
            again.append(folder)
            self._told_unreadable.discard(display_path(folder))  # unreadable again later: said again
        return again

    def _lost_events(self, why: str) -> None:
        log.warning("file events may have been lost (%s); reconciling every folder", why)
        self.submit(partial(self._reconcile, why))

    def _pipeline_event(self, kind: str, data: dict[str, Any]) -> None:
        self.bus.publish(kind, **data)

    def _finished(self) -> int:
        if self.indexer is None:
            return 0
        stats = self.indexer.stats
        return stats.committed + stats.failed + stats.touched

    def progress(self, queued: int) -> dict[str, Any]:
        """How indexing goes: the rate over the last minute, the time the queue would take, the counters."""
        stats = self.indexer.stats if self.indexer is not None else None
        inflight = len(self.indexer.pipeline.inflight) if self.indexer is not None else 0
        return progress_of(stats, list(self._done), queued, inflight) | {
            "scanning": self.scanning, "dirty_folders": self.watcher.pending()}


def _core_settings(config: Config) -> tuple[Any, ...]:
    """The settings whose change needs the core reopened (folders, watching and serving do not)."""
    return (config.paths, config.models, config.tagger, config.clip_tags, config.describe, config.ocr, config.decode,
            config.pipeline, config.sidecar, config.index)


def _models_present(config: Config) -> bool:
    return _model_files(config) is not None


def _model_files(config: Config) -> tuple[tuple[str, int, int], ...] | None:
    """The configured CLIP model's files with their size and mtime, or None while one is missing: reduced
    mode ends when this changes, not merely because the files exist (a model that is there but cannot load
    must not reopen the core every few seconds)."""
    clip = config.model_dir / "clip" / config.models.clip
    found = []
    for name in CLIP_FILES:
        try:
            st = (clip / name).stat()
        except OSError:
            return None
        found.append((name, st.st_size, st.st_mtime_ns))
    return tuple(found)
