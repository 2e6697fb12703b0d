"""Stage two: read, hash, decode and preprocess in the decode pool (`prepare.prepare`), results in order, a window
of files ahead. Unchanged content is only hashed; a sidecar that carries what the models would make of the
content spares the decode. A file that cannot be read, kills its worker or runs past `decode.timeout` is that
file's failure."""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from pebble import ProcessExpired

from pixdex.indexer.catalog.rows import ASKED, QueueEntry
from pixdex.indexer.errors import ReadError
from pixdex.indexer.paths import display_path
from pixdex.indexer.pools import exit_reason
from pixdex.indexer.prepare import DecodeSpec, FromSidecar, Prepared, prepare
from pixdex.indexer.stages.flow import Flow, Inbox, Stopped, get_nowait, send_stop
from pixdex.indexer.stages.work import STOP, Work

log = logging.getLogger(__name__)


class Decode(Flow):
    def decode(self, inbox: Inbox, outbox: Inbox) -> None:
        pending: deque[tuple[Work, Future[Prepared]]] = deque()
        timeout = self.config.decode.timeout
        while True:
            item = inbox.get() if not pending else get_nowait(inbox)
            if item is STOP:
                break
            if item is not None:
                spec = DecodeSpec(self.info.min_side, self.config.decode.max_pixels, self.info.transform,
                                  self.info.tagger_size, self._known_hash(item.entry), self._from_sidecar(item.entry),
                                  self.info.dim, self.config.decode.max_megabytes << 20,
                                  self.config.sidecar.naming if item.entry.reason == "sidecar changed" else None)
                pending.append((item, self.decode_pool.schedule(prepare, (item.entry.row.path, spec), timeout=timeout)))
                self.stats.at["decode"] = display_path(item.entry.row.path)
            if pending and (item is None or len(pending) >= self._window or pending[0][1].done()):
                work, future = pending.popleft()
                self._finish_decode(work, future)
                if self._stopping.is_set() or not self._put(outbox, work):
                    break
        for _work, future in pending:
            future.cancel()
        send_stop(outbox)

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
        start = time.perf_counter()
        try:
            work.prepared = self._await(future)
        except Stopped:
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
        except Exception as exc:  # noqa: BLE001 - a hostile file must never stop the run
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
