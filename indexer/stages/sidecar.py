"""Stage five: merge each image's results into its sidecar and read what it says now, in the decode pool, under
the sidecar lock (`sidecars.keeper`). An image that left its path before its write is marked `moved`: its sidecar
is written at its new path when its entry comes round again."""

from __future__ import annotations

import json
import os
import time

from pixdex.indexer.catalog.rows import CHANGED
from pixdex.indexer.paths import display_path
from pixdex.indexer.places import FIELDS
from pixdex.indexer.sidecars.keeper import outcome
from pixdex.indexer.sidecars.tasks import Embedding, SidecarSpec, Whereabouts
from pixdex.indexer.stages.flow import Flow, Inbox, send_stop
from pixdex.indexer.stages.work import STOP, Work


class Sidecar(Flow):
    def sidecar(self, inbox: Inbox, outbox: Inbox) -> None:
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
        send_stop(outbox)

    def _write_sidecars(self, batch: list[Work]) -> list[Work]:
        """Merge and read each image's sidecar, for images still at their path (under `sidecars.io`). One that
        left it before its write is marked `moved`: its sidecar is written at its new path when its entry comes
        round again. One that moves during the write leaves what was written at the old path, which the scanner
        carries over with the move."""
        done = [w for w in batch if w.error is None and w.prepared is not None]
        for work in done:
            work.moved = gone(work.entry.row.path)
        done = [w for w in done if not w.moved]
        self.sidecars.merging(w.entry.row.path for w in done)
        futures = [self.sidecars.merge(w.entry.row.path, *self._tags_of(w), self.sidecar_spec(w), self._embedding_of(w),
                                       self._id_of(w), whereabouts(w)) for w in done]
        for work, future in zip(done, futures, strict=True):
            try:
                self._await_done(future)
            finally:
                self.sidecars.merged(work.entry.row.path)
            work.side = outcome(future, work.entry.row.path)
            work.moved = gone(work.entry.row.path)
            self._after_sidecar(work)
        return done

    def _id_of(self, work: Work) -> int:
        """The id the sidecar records: a new row's sidecar keeps the id it carries when that is free, and so does
        an indexed image's own sidecar come back for the same content (restored from the trash after the image):
        the writer gives the row that id as it commits (`Commands._takes_sidecar_id`, `Commands.touch`)."""
        row, prepared = work.entry.row, work.prepared
        wanted = prepared.sidecar_id if prepared else None
        fresh = row.state == "pending" and row.hash is None
        back = prepared is not None and (prepared.same_content or prepared.sidecar_id_checked)
        if wanted is None or wanted == row.id or not (fresh or back):
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

    def _embedding_of(self, work: Work) -> Embedding | None:
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


def whereabouts(work: Work) -> Whereabouts:
    """The image's own GPS position and location fields: as just read, or the row's for known content."""
    fresh = work.prepared is not None and not work.prepared.same_content
    embedded = work.prepared.embedded if fresh and work.prepared is not None else json.loads(work.entry.row.embedded)
    lat, lon = embedded.get("lat"), embedded.get("lon")
    return Whereabouts(float(lat) if isinstance(lat, (int, float)) else None,
                       float(lon) if isinstance(lon, (int, float)) else None,
                       {f: str(embedded[f]) for f in FIELDS if embedded.get(f)})


def gone(path: bytes) -> bool:
    """Whether nothing is at `path` any more (moved or deleted). Another file there (an editor's save renamed
    over it) is a change the scanner queues again: what is in flight commits, and its turn comes again."""
    return not os.path.lexists(path)
