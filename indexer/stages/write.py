"""Stage six: hand the results to the writer — a failure, a new stat of known content, or what was indexed — and
tell the event listener once they are committed; entries leave the flight then. A file that vanished or moved
on the way is parked instead (`parking`): nothing is committed, its entry stays queued."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from pixdex.indexer import faults
from pixdex.indexer.catalog.rows import FileStat
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.paths import display_path
from pixdex.indexer.stages.flow import Flow, Inbox
from pixdex.indexer.stages.work import STOP, Work
from pixdex.indexer.writer.commands import Indexed

log = logging.getLogger(__name__)


class Write(Flow):
    def write(self, inbox: Inbox, _outbox: Inbox) -> None:
        while (batch := inbox.get()) is not STOP:
            futures: list[Future[Any]] = []
            indexed = []
            for work in batch:
                entry, prepared = work.entry, work.prepared
                if prepared is not None and work.side is not None and work.side.image_stat is not None:
                    dev, ino, size, mtime_ns = work.side.image_stat  # pixdex wrote the image's own XMP
                    prepared.stat = FileStat(prepared.stat.path, dev, ino, size, mtime_ns)
                    prepared.digest = work.side.image_digest or prepared.digest
                if (work.vanished or work.moved) and self.parking.park(entry.row.id, entry.row.path):
                    work.parked = True
                    continue  # stays queued: fed again at its new path once the scanner registers the move
                self.parking.done(entry.row.id)
                if work.error is not None:
                    stat = prepared.stat if prepared else None
                    failed = self.writer.fail(entry.row.id, entry.seq, stat, prepared.digest if prepared else None,
                                              work.error, tried=entry.row.path if work.vanished else None)
                    failed.add_done_callback(partial(self._count_failure, work=work))
                    futures.append(failed)
                elif prepared is not None and prepared.same_content:
                    touched = self.writer.touch(entry.row.id, entry.seq, prepared.stat, prepared.digest, work.side,
                                                prepared.sidecar_id)
                    touched.add_done_callback(self._note_rekeyed)
                    futures.append(touched)
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
                                           prepared.sidecar_id, prepared.phash, prepared.ocr,
                                           prepared.sidecar_id_checked))
            if indexed:
                faults.hold("commit", [item.stat.path for item in indexed])
                stored = self.writer.store(indexed)
                stored.add_done_callback(self._note_rekeyed)  # before `_when_all`'s: `_tell` names the new ids
                futures.append(stored)
            self.stats.current = display_path(batch[-1].entry.row.path) if batch else ""
            handed = len(batch) if futures else 0
            with self._inflight_lock:
                self._at_writer += handed
                drained = self._at_writer >= len(self.inflight) and inbox.empty()
            when_all(futures, partial(self._committed, batch, len(indexed), handed))
            if futures and drained:  # everything in flight waits for this commit: do not wait commit_seconds
                self.writer.commit_soon()

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

    def _count_failure(self, future: Future[Any], work: Work) -> None:
        if future.exception() is None and future.result():  # False: it moved meanwhile, tried again
            with self.stats.lock:
                self.stats.failed += 1
                self.stats.failures.append((display_path(work.entry.row.path), work.error or ""))

    def _committed(self, batch: list[Work], stored: int, handed: int, ok: bool) -> None:
        if ok:
            with self.stats.lock:
                self.stats.committed += stored
            self._tell(batch)
        else:  # the catalog refuses writes (disk full, …): stop rather than redo the same work forever
            self.fatal = self.fatal or PixdexError(f"{self.writer.catalog.path}: cannot commit results; see the log")
            self._stopping.set()
        self._release(batch, handed)
        self._wake.set()


def when_all(futures: list[Future[Any]], callback: Callable[[bool], None]) -> None:
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
