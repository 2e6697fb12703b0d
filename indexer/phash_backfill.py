"""Perceptual hashes for images indexed before pixdex hashed them, or before it measured a hash's detail
(`PhashBackfill`): a thread beside the pipeline that, while the pipeline has nothing to do, takes the catalog's
done rows whose content has no hash (or one without its detail), decodes each in the decode pool at a tiny draft
size (`phash.phash_file`: no model, no embedding, no sidecar) and has the writer store the hash for the content it
was computed from. A file that cannot be decoded gets an empty hash, so it is not tried again until its content
changes; one that changed meanwhile is left to the pipeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.phashes import UNDECODABLE, Phash
from pixdex.indexer.phash import phash_file
from pixdex.indexer.pools import Pool

log = logging.getLogger(__name__)

BATCH = 64
IDLE = 30.0  # seconds between looks when nothing was left to hash
BUSY = 1.0  # seconds between looks while the pipeline works


class PhashBackfill:
    def __init__(self, catalog: Path, pool: Pool, submit: Callable[[Callable[[Catalog, int], Any]], Future[Any]],
                 max_pixels: int, busy: Callable[[], bool]) -> None:
        """`submit`: the writer's; `busy`: whether the pipeline has work (or is paused): then this waits."""
        self.catalog, self.pool, self.submit, self.max_pixels, self.busy = catalog, pool, submit, max_pixels, busy
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one batch at a time (the thread's, or `drain`'s)
        self._thread = threading.Thread(target=self._run, name="pixdex-phash", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def drain(self) -> int:
        """Hash every row that lacks a hash now (`pixdex index`); returns how many were stored."""
        reader = Catalog(self.catalog, read_only=True)
        try:
            batches = reader.unhashed_count() // BATCH + 2  # never more: a row that keeps failing is not looped on
        finally:
            reader.close()
        total = 0
        for _ in range(batches):
            done = self.batch()
            if not done:
                break
            total += done
        return total

    def batch(self) -> int:
        """One batch: returns how many hashes were stored (0: nothing left that could be hashed now)."""
        with self._lock:
            reader = Catalog(self.catalog, read_only=True)
            try:
                rows = reader.unhashed(BATCH)
            finally:
                reader.close()
            if not rows:
                return 0
            jobs = [(image_id, digest, self.pool.schedule(phash_file, (path, self.max_pixels), timeout=60))
                    for image_id, path, digest in rows]
            results: list[tuple[int, str, str, Phash]] = []
            for image_id, digest, job in jobs:
                try:
                    now, phash = job.result()
                except Exception as exc:  # noqa: BLE001 - this file's problem: an empty hash, not tried again
                    log.info("no perceptual hash for item %d: %s", image_id, exc)
                    now, phash = digest, UNDECODABLE
                results.append((image_id, digest, now, phash))
            stored = self.submit(lambda catalog, gen: _store(catalog, results)).result()
            return int(stored)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.busy():
                self._stop.wait(BUSY)
                continue
            try:
                stored = self.batch()
            except Exception:  # the pool or the writer is closing: look again later
                log.debug("perceptual hash backfill interrupted", exc_info=True)
                stored = 0
            if not stored:
                self._stop.wait(IDLE)


def _store(catalog: Catalog, results: list[tuple[int, str, str, Phash]]) -> int:
    """Store each hash whose content is still the row's (the file did not change since it was read)."""
    stored = 0
    for image_id, digest, now, phash in results:
        found = catalog.db.execute("SELECT hash FROM images WHERE id = ?", (image_id,)).fetchone()
        if found is not None and found[0] == digest == now:
            catalog.set_phash(image_id, digest, phash)
            stored += 1
    return stored
