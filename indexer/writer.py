"""The single writer: one thread that owns every mutation of the catalog, the text and the vector index.

Callers submit commands (`register`, `store`, `fail`, `touch`, `enqueue`, …) and get a future, as
datasette's write thread hands out. The thread gathers commands and commits them together when
`commit_items` changed or `commit_seconds` passed since the first one — a short transaction that
only runs SQL, never held open while anything else (decoding, inference) happens.

A commit bumps the catalog's generation and stamps every row it touched. Only after the catalog
committed are the two indexes brought up to that generation, from what the catalog now says
(`changed_since`): tantivy documents are rebuilt from rows, vectors from stored embeddings. So a
failed commit is rolled back in SQLite and nothing else ever saw it, and an index that missed a
commit (crash, error) catches up at the next one or at open. Then the generation is published.
A command that fails inside a group is retried alone, so only it fails.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import BACKFILL, CHANGED, FileStat, ImageRow
from pixdex.indexer.fulltext import FullText, doc_of_row
from pixdex.indexer.sidecars.state import SidecarState
from pixdex.indexer.metadata.effective import effective
from pixdex.indexer.sections import PipelineSettings
from pixdex.indexer.vectors import VectorIndex

log = logging.getLogger(__name__)

Command = Callable[[Catalog, int], Any]  # runs inside the transaction, given the new generation


@dataclass
class Indexed:
    """Everything the pipeline learnt about one image, ready to commit."""

    image_id: int
    seq: int
    stat: FileStat
    digest: str
    width: int
    height: int
    taken: datetime | None
    camera: str | None
    tags: list[dict[str, object]]
    embedding: NDArray[np.float32] | None  # None without models (reduced mode)
    embedded: dict[str, Any] = field(default_factory=dict)  # the image's own metadata (metadata.Embedded)
    side: SidecarState | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # decode.ExifFacts.as_dict()
    # The models that made `embedding` and `tags` (CLIP, keywords); None: the writer's (the configured ones).
    models: tuple[str | None, str | None] | None = None
    sidecar_id: int | None = None  # the id its sidecar carries: a new row takes it when it is free


@dataclass
class Registered:
    """What a scan put in the catalog and the queue."""

    new: int = 0
    changed: int = 0
    stale: int = 0
    moved: list[tuple[ImageRow, FileStat]] | None = None
    removed: int = 0


class Writer:
    def __init__(self, catalog: Catalog, fulltext: FullText, vectors: VectorIndex | None, settings: PipelineSettings,
                 models: tuple[str, str | None],
                 open_vectors: Callable[[str, int], VectorIndex] | None = None,
                 ids: Mapping[bytes, int] | None = None) -> None:
        """`open_vectors(model, dim)`: without models (reduced mode), the vector index for embeddings taken from
        sidecars, opened when the first one arrives. `ids`: the id a new file at a path takes if it is free."""
        self._ids = ids or {}
        self.catalog = catalog
        self.fulltext = fulltext
        self.vectors = vectors
        self._open_vectors = open_vectors
        self.settings = settings
        self.models = models
        self.commits = 0
        self._commands: queue.Queue[tuple[Command | None, Future[Any]]] = queue.Queue()
        self._published = threading.Condition()
        self.generation = catalog.generation()
        self._adopt_old_vectors()
        self._adopt_sidecars()
        self.live = self._settle_live()
        self._catch_up()
        self._thread = threading.Thread(target=self._run, name="pixdex-writer", daemon=True)
        self._thread.start()

    # Commands ---------------------------------------------------------------------------------
    def submit(self, command: Command) -> Future[Any]:
        future: Future[Any] = Future()
        if not self._thread.is_alive():
            future.set_exception(RuntimeError("the writer is closed"))
            return future
        self._commands.put((command, future))
        return future

    def flush(self) -> int:
        """Commit everything submitted so far; returns the generation that holds it."""
        future: Future[Any] = Future()
        self._commands.put((None, future))
        return int(future.result())

    def close(self) -> None:
        """Commit what is pending, save the vector index, stop the thread."""
        if self._thread.is_alive():
            self.flush()
            self._commands.put((_STOP, Future()))
            self._thread.join()
        if self.vectors is not None:
            self.vectors.save()

    def wait_for(self, generation: int, timeout: float | None = None) -> bool:
        with self._published:
            return self._published.wait_for(lambda: self.generation >= generation, timeout)

    def register(self, new: list[FileStat], changed: list[tuple[ImageRow, FileStat]], stale: list[ImageRow],
                 moved: list[tuple[ImageRow, FileStat]], removed: list[ImageRow],
                 sidecar: list[ImageRow] = (), drop_sidecars: bool = False) -> Future[Any]:  # type: ignore[assignment]
        """What a scan found. With `drop_sidecars`, the removed images' sidecars are written down to be removed
        (if pixdex's alone) in the same transaction: `Indexer` removes them after the commit."""
        def run(catalog: Catalog, gen: int) -> None:
            catalog.delete([r.id for r in removed], gen)
            if drop_sidecars:
                catalog.add_sidecar_drops(r.path for r in removed)
            for row, _st in moved:  # two steps, so rows can trade paths without a clash
                catalog.db.execute("UPDATE images SET path = ? WHERE id = ?", (b"\0moving %d" % row.id, row.id))
            for row, st in moved:
                # What the row is now, not what the scan read: a worker may have failed or finished it since.
                # One still queued (maybe in flight at its old path) is done again at its new path: what a
                # worker was writing there (its sidecar) belongs there now. One a worker committed after the
                # scan read it is checked again: the scan matched the file to the content it read.
                now = catalog.get(row.id) or row
                catalog.set_file(row.id, st, now.hash, gen)
                if catalog.is_queued(row.id):
                    catalog.requeue(row.id)
                elif not now.current_for(self.models):
                    catalog.enqueue(row.id, CHANGED, "moved, not indexed by the current models")
                elif (now.hash, now.size, now.mtime_ns) != (row.hash, row.size, row.mtime_ns):
                    catalog.enqueue(row.id, CHANGED, "moved while being indexed")
            for st in new:
                catalog.enqueue(catalog.insert(st, gen, self._ids.get(st.path)), CHANGED, "new file")
            for row, _st in changed:  # one in flight read the old content: it must leave this queued
                catalog.enqueue(row.id, CHANGED, "content changed", again=True)
            for row in stale:  # as the row is now: one a worker finished since the scan read it is current
                now = catalog.get(row.id)
                if now is not None and not now.current_for(self.models):
                    catalog.enqueue(row.id, BACKFILL if now.state == "done" else CHANGED, _stale_reason(now))
            for row in sidecar:  # re-read the sidecar only: the content is known, no decode, no model
                catalog.enqueue(row.id, CHANGED, "sidecar changed", again=True)  # one in flight read the old one
        return self.submit(run)

    def enqueue(self, ids: list[int], priority: int, reason: str, again: bool = False) -> Future[Any]:
        def run(catalog: Catalog, gen: int) -> None:
            for image_id in ids:
                catalog.enqueue(image_id, priority, reason, again)
        return self.submit(run)

    def store(self, items: list[Indexed]) -> Future[Any]:
        def run(catalog: Catalog, gen: int) -> dict[int, int]:
            rekeyed: dict[int, int] = {}  # the result: rows that took their sidecar's id (old → new)
            for item in items:
                catalog.dequeue(item.image_id, item.seq)
                image_id = item.image_id
                before = catalog.get(image_id)  # the content it had: a description is for that content
                if before is not None and item.sidecar_id and self._takes_sidecar_id(catalog, before, item.sidecar_id):
                    catalog.rekey(image_id, item.sidecar_id)
                    rekeyed[image_id] = image_id = item.sidecar_id
                    before = catalog.get(image_id)
                if not _content_changed(catalog, image_id, item.stat, item.digest, gen):
                    continue
                row = catalog.get(image_id)
                machine = item.tags
                if row is not None and before is not None and row.described and before.hash == item.digest:
                    machine = machine + llm_tags(row.llm_dict, machine)  # same content: its description stands
                elif row is not None and row.described:
                    catalog.set_described(image_id, None, {}, None, row.tag_list, gen)  # describe again
                tags, text, rejected, shown = effective(machine, item.embedded, item.side,
                                                         row.rejected_list if row else [])
                # The capture date: EXIF (original → digitized → modified), then XMP/IPTC's creation date.
                taken = item.taken.isoformat() if item.taken else item.embedded.get("created") or None
                models = item.models or self.models
                embedding = item.embedding if self._vectors_for(catalog, models[0], item.embedding) else None
                catalog.mark_done(
                    image_id, clip_model=models[0] if embedding is not None else None,
                    tagger_model=models[1] if embedding is not None else None, width=item.width,
                    height=item.height, taken=taken, camera=item.camera,
                    tags=tags, metadata=text, sidecar_error=item.side.error if item.side else None,
                    embedding=embedding, side=item.side.signature if item.side else None, rejected=rejected,
                    embedded=item.embedded, facts=_with_shown(item.facts, shown),
                    side_hash=item.side.digest if item.side else None,
                    same_content=before is not None and before.hash == item.digest)
            return rekeyed
        return self.submit(run)

    def _takes_sidecar_id(self, catalog: Catalog, row: ImageRow, wanted: int | None) -> bool:
        """A row registered just now (never indexed) takes the id its sidecar carries, when that is free and no
        earlier catalog (a rebuild's) gave it one: links and views made before a rebuild, or on another
        machine, still name it."""
        if wanted is None or wanted == row.id or row.state != "pending" or row.hash is not None \
                or row.path in self._ids:
            return False
        return catalog.db.execute("SELECT 1 FROM images WHERE id = ? UNION ALL SELECT 1 FROM tombstones WHERE "
                                  "image_id = ?", (wanted, wanted)).fetchone() is None

    def _vectors_for(self, catalog: Catalog, model: str | None, embedding: NDArray[np.float32] | None) -> bool:
        """Whether `item`'s embedding is kept. With models, it is theirs. Without (reduced mode), one taken from
        a sidecar is kept when its model is the live one, or becomes live (then its index opens): searches and
        `similar` use it until the configured model's files are there."""
        if embedding is None or not model:
            return False
        if self.models[0]:
            return True
        live = catalog.live_model()
        if live not in (None, model) or (self.vectors is not None and self.vectors.model_id != model):
            return False
        if live is None:
            catalog.set_live(model)
        if self.vectors is None:
            if self._open_vectors is None:
                return False
            self.vectors = self._open_vectors(model, len(embedding))
        return True

    def touch(self, image_id: int, seq: int, st: FileStat, digest: str, side: SidecarState | None = None,
              ) -> Future[Any]:
        """A file whose content did not change (a new mtime, or only its sidecar changed): the catalog learns
        the new stat and what the sidecar says now; no decode, no model."""
        def run(catalog: Catalog, gen: int) -> None:
            catalog.dequeue(image_id, seq)
            if _content_changed(catalog, image_id, st, digest, gen) and side is not None:
                _record_sidecar(catalog, image_id, side, gen)
        return self.submit(run)

    def described(self, image_id: int, describer: str, llm: dict[str, Any], error: str | None,
                  side: SidecarState | None, digest: str | None) -> Future[Any]:
        """The vision LLM's answer for an image (or why there is none): its keywords join the machine tags
        (source "llm"), its description and text the searchable text; then what the sidecar says now."""
        def run(catalog: Catalog, gen: int) -> None:
            row = catalog.get(image_id)
            if row is None or row.state != "done" or (digest is not None and row.hash != digest):
                return  # gone, or changed while it was being described: it is described again
            machine = [t for t in row.machine_tags if t.get("source") != "llm"]
            person = [t for t in row.tag_list if t.get("category") == "person"]
            rejected = {str(r).casefold() for r in row.rejected_list}
            added = [t for t in llm_tags(llm, machine) if str(t["name"]).casefold() not in rejected]
            catalog.set_described(image_id, describer, llm, error, machine + added + person, gen)
            if side is not None:
                _record_sidecar(catalog, image_id, side, gen)
        return self.submit(run)

    def sidecars_dropped(self, paths: list[bytes]) -> Future[Any]:
        return self.submit(lambda catalog, gen: catalog.forget_sidecar_drops(paths))

    def folders_scanned(self, deep: list[bytes], shallow: list[bytes], errors: list[tuple[bytes, str]]) -> Future[Any]:
        return self.submit(lambda catalog, gen: catalog.set_folder_errors(deep, shallow, errors))

    def sidecar_read(self, image_id: int, side: SidecarState) -> Future[Any]:
        """A person's edit through pixdex was written to the sidecar: index what it says now."""
        return self.submit(lambda catalog, gen: _record_sidecar(catalog, image_id, side, gen))

    def fail(self, image_id: int, seq: int, st: FileStat | None, digest: str | None, reason: str,
             tried: bytes | None = None) -> Future[Any]:
        """Record a file's failure. `tried` is the path that was found missing: when the catalog has moved
        the row elsewhere since, the entry stays queued and is tried again at its new path."""
        def run(catalog: Catalog, gen: int) -> bool:
            if tried is not None:
                found = catalog.db.execute("SELECT path FROM images WHERE id = ?", (image_id,)).fetchone()
                if found is not None and found[0] != tried:
                    return False
            catalog.dequeue(image_id, seq)
            if st is not None:
                _content_changed(catalog, image_id, st, digest, gen)
            catalog.db.execute("UPDATE images SET gen = ? WHERE id = ?", (gen, image_id))
            catalog.mark_failed(image_id, reason)
            return True
        return self.submit(run)

    # The thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        group: list[tuple[Command, Future[Any]]] = []
        first = 0.0
        while True:
            timeout = None
            if group:
                timeout = max(0.0, first + self.settings.commit_seconds - time.monotonic())
            elif self.vectors is not None and self.vectors.unsaved:  # wake up when the vector file is due for a save
                timeout = max(0.0, self.vectors.last_save + self.vectors.settings.save_seconds - time.monotonic())
            try:
                command, future = self._commands.get(timeout=timeout)
            except queue.Empty:
                command, future = None, None  # type: ignore[assignment]
            if command is _STOP:
                return
            if command is not None:
                if not group:
                    first = time.monotonic()
                group.append((command, future))
            flush_asked = command is None and future is not None
            if group and (flush_asked or len(group) >= self.settings.commit_items
                          or time.monotonic() - first >= self.settings.commit_seconds):
                try:
                    self._commit(group)
                except Exception as exc:  # the thread must outlive any one commit
                    log.exception("commit failed")
                    for _, waiting in group:
                        if not waiting.done():
                            waiting.set_exception(exc)
                group = []
            if flush_asked:
                future.set_result(self.generation)
            if self.vectors is not None and self.vectors.due():
                self._save_vectors()

    def _commit(self, group: list[tuple[Command, Future[Any]]]) -> None:
        try:
            results = self._transaction([c for c, _ in group])
        except Exception as exc:
            if len(group) > 1:
                for one in group:
                    self._commit([one])
                return
            log.error("commit failed: %s", exc)
            group[0][1].set_exception(exc)
            return
        self._catch_up()
        for (_, future), result in zip(group, results, strict=True):
            future.set_result(result)

    def _transaction(self, commands: list[Command]) -> list[Any]:
        db = self.catalog.db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            gen = self.catalog.generation() + 1
            results = [command(self.catalog, gen) for command in commands]
            if db.total_changes == before:  # nothing changed: no new generation, nothing to catch up
                db.execute("ROLLBACK")
                return results
            self.catalog.set_generation(gen)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.commits += 1
        return results

    def _catch_up(self) -> None:
        """Bring both indexes to the catalog's generation, then publish it."""
        generation = self.catalog.generation()
        try:
            if self.fulltext.generation != generation:
                sync_text(self.catalog, self.fulltext)
        except Exception as exc:  # the text index stays behind and catches up at the next commit
            log.error("text index commit failed (it catches up later): %s", exc)
            self.fulltext.rollback()
        try:
            if self.vectors is not None:
                self.vectors.top_up(self.catalog)
                if self.vectors.building:
                    self._promote_when_complete()
        except Exception:  # rebuilt from the catalog's embeddings at the next commit
            log.exception("vector index update failed; rebuilding it from the catalog")
            self.vectors.generation = 0
        with self._published:
            self.generation = generation
            self._published.notify_all()

    def _adopt_old_vectors(self) -> None:
        """Once per catalog: done rows without a stored embedding (a catalog from before embeddings were
        kept) take theirs from the vector file when it has them, and are queued for embedding otherwise."""
        catalog = self.catalog
        if self.vectors is None or catalog.db.execute(
                "SELECT 1 FROM meta WHERE key = 'embeddings_checked'").fetchone():
            return
        missing = catalog.missing_embeddings(self.models[0])
        with catalog.transaction():
            for image_id in missing:
                if image_id in self.vectors:
                    vector = np.asarray(self.vectors.index.get(np.uint64(image_id)), dtype=np.float32)
                    catalog.put_embedding(image_id, self.models[0], vector.reshape(-1))
                else:
                    catalog.enqueue(image_id, BACKFILL, "no stored embedding")
            catalog.db.execute("INSERT INTO meta VALUES ('embeddings_checked', 1)")

    def _adopt_sidecars(self) -> None:
        """Once per catalog, without models: images waiting for them whose sidecar was read are read again, so
        the keywords and embedding it holds from models that ran elsewhere are taken (catalogs from before
        reduced mode took them)."""
        catalog = self.catalog
        if self.models[0] or catalog.meta("sidecars_adopted"):
            return
        with catalog.transaction():
            for (image_id,) in catalog.db.execute("SELECT id FROM images WHERE state = 'done' AND clip_model IS NULL "
                                                  "AND side IS NOT NULL").fetchall():
                catalog.enqueue(int(image_id), BACKFILL, "keywords and embedding from its sidecar")
            catalog.set_meta("sidecars_adopted", 1)

    def _settle_live(self) -> str | None:
        """The live CLIP model at open. The first model to embed anything becomes live; vectors of models
        that are neither live nor configured (a switch given up) go. Without models nothing changes."""
        new = self.models[0]
        if self.vectors is None or not new:
            return self.catalog.live_model()
        live = self.catalog.switching_from(new)  # the one decision VectorIndex was opened with (`building`)
        with self.catalog.transaction():
            if live is None:
                self.catalog.set_live(new)
            else:
                self.catalog.drop_embeddings_except([live, new])
        if live is None:
            return new
        log.info("re-embedding with %s: searches use %s until %d images have their new vectors", new, live,
                 self.catalog.old_vectors_left(live, new.rsplit("@", 1)[0]))
        return live

    def _promote_when_complete(self) -> None:
        """While a new model re-embeds: once no image has a live vector without a new one, it becomes live."""
        assert self.vectors is not None and self.live is not None
        new = self.models[0]
        if self.catalog.has_old_vectors(self.live, new):
            return
        with self.catalog.transaction():
            self.catalog.set_live(new)
        self.vectors.promote()
        log.info("every image has its %s vector: searches use it now (was %s)", new, self.live)
        self.live = new

    def _save_vectors(self) -> None:
        assert self.vectors is not None
        try:
            self.vectors.save()
        except OSError as exc:
            log.error("cannot save the vector index (kept in memory, retried later): %s", exc)
            return
        upto = min(self.fulltext.generation, self.vectors.saved_generation)
        with self.catalog.transaction():
            self.catalog.forget_tombstones(upto)


_STOP: Command = lambda catalog, gen: None  # noqa: E731 - a sentinel that is never run


def _stale_reason(row: ImageRow) -> str:
    if row.state != "done":
        return "not indexed yet"
    return "waiting for models" if row.clip_model is None else "indexed by other models"


def _record_sidecar(catalog: Catalog, image_id: int, side: SidecarState, gen: int) -> None:
    row = catalog.get(image_id)
    if row is None or row.state != "done":
        return
    tags, text, rejected, shown = effective(row.machine_tags, json.loads(row.embedded), side, row.rejected_list)
    catalog.set_sidecar(image_id, tags, text, side.signature, rejected, side.error,
                        _with_shown(row.fact_dict, shown), gen, side.digest)


def llm_tags(llm: dict[str, Any], have: list[dict[str, object]]) -> list[dict[str, object]]:
    """The LLM's keywords as machine tags (source "llm"), leaving out those the other taggers found."""
    seen = {str(t["name"]).casefold() for t in have}
    out: list[dict[str, object]] = []
    for keyword in llm.get("keywords", []):
        if isinstance(keyword, str) and keyword.strip() and keyword.strip().casefold() not in seen:
            seen.add(keyword.strip().casefold())
            out.append({"name": keyword.strip(), "confidence": 1.0, "category": "general", "source": "llm"})
    return out


def _with_shown(facts: dict[str, Any], shown: dict[str, Any]) -> dict[str, Any]:
    """The EXIF facts plus the rating (a filter) and description (for the web page) the image shows now."""
    out = {k: v for k, v in facts.items() if k not in shown}
    return out | {k: v for k, v in shown.items() if v is not None}


def _content_changed(catalog: Catalog, image_id: int, st: FileStat, digest: str | None, gen: int) -> bool:
    """Record the content the pipeline read (stat taken from the open file); False if the row is gone.

    The path is not taken from `st`: the file may have moved while it was being processed.
    """
    found = catalog.db.execute("SELECT path FROM images WHERE id = ?", (image_id,)).fetchone()
    if found is None:
        return False
    catalog.set_file(image_id, FileStat(found[0], st.dev, st.ino, st.size, st.mtime_ns), digest, gen)
    return True


def sync_text(catalog: Catalog, fulltext: FullText) -> None:
    """Rebuild the text documents of everything the catalog changed after the index's generation."""
    generation = catalog.generation()
    if fulltext.generation > generation:  # an index newer than its catalog (restored from a backup)
        fulltext.clear()
        fulltext.generation = 0
    rows, gone = catalog.changed_since(fulltext.generation)
    # A row that was never done (a file just registered) has no document to remove.
    removed = [*gone, *(r.id for r in rows if r.state != "done" and (r.state == "failed" or r.hash is not None))]
    docs = [doc_of_row(r) for r in rows if r.state == "done"]
    if not removed and not docs and fulltext.generation:
        fulltext.generation = generation  # nothing changes in tantivy; a restart replays these rows for free
        return
    fulltext.remove(removed)
    fulltext.upsert(docs)
    fulltext.commit(generation)
