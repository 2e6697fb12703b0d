"""The writer's commands: what a scan found (`register`), what the pipeline made of an image (`store`, `touch`,
`fail`), what the describer and a person's edit wrote into a sidecar (`described`, `sidecar_read`), and the
queue and bookkeeping (`enqueue`, `sidecars_dropped`, `folders_scanned`). Each returns a future and runs later,
in the writer thread, inside a transaction with others (`Writer.submit`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.phashes import Phash
from pixdex.indexer.catalog.rows import BACKFILL, CHANGED, FileStat, ImageRow
from pixdex.indexer.metadata.effective import effective
from pixdex.indexer.sidecars.state import SidecarState
from pixdex.indexer.vectors import VectorIndex
from pixdex.indexer.writer.bulk import geo_of, ocr_reading, store_many, with_shown

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
    phash: Phash | None = None  # the perceptual hash of the decoded pixels (None: not decoded this time)
    ocr: tuple[str, str] | None = None  # (reader, text) the sidecar carries for this content: no OCR model call
    sidecar_id_checked: bool = False  # `sidecar_id` is recorded for this content: an indexed row takes it back too


class Commands:
    """The writer's commands (mixed into `Writer`, whose thread runs them)."""

    models: tuple[str, str | None]
    vectors: VectorIndex | None
    _ids: Mapping[bytes, int]
    _open_vectors: Callable[[str, int], VectorIndex] | None

    def submit(self, command: Command) -> Future[Any]:
        raise NotImplementedError  # `Writer.submit`

    def register(self, new: list[FileStat], changed: list[tuple[ImageRow, FileStat]], stale: list[ImageRow],
                 moved: list[tuple[ImageRow, FileStat]], removed: list[ImageRow],
                 sidecar: Sequence[ImageRow] = (), drop_sidecars: bool = False) -> Future[Any]:
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
            catalog.enqueue_many(catalog.insert_many(new, gen, [self._ids.get(st.path) for st in new]), CHANGED,
                                 "new file")
            for row, _st in changed:  # one in flight read the old content: it must leave this queued
                catalog.enqueue(row.id, CHANGED, "content changed", again=True)
            for row in stale:  # as the row is now: one a worker finished since the scan read it is current
                current = catalog.get(row.id)
                if current is not None and not current.current_for(self.models):
                    catalog.enqueue(row.id, BACKFILL if current.state == "done" else CHANGED, _stale_reason(current))
            for row in sidecar:  # re-read the sidecar only: the content is known, no decode, no model
                catalog.enqueue(row.id, CHANGED, "sidecar changed", again=True)  # one in flight read the old one
        return self.submit(run)

    def enqueue(self, ids: list[int], priority: int, reason: str, again: bool = False) -> Future[Any]:
        def run(catalog: Catalog, gen: int) -> None:
            for image_id in ids:
                catalog.enqueue(image_id, priority, reason, again)
        return self.submit(run)

    def store(self, items: list[Indexed]) -> Future[Any]:
        """What the pipeline made of these images; the result: the rows that took their sidecar's id (old → new).
        Stored together (`bulk.store_many`), as `_store_one` stores each."""
        def run(catalog: Catalog, gen: int) -> dict[int, int]:
            return store_many(self, catalog, gen, items, self._store_one)
        return self.submit(run)

    def store_each(self, items: list[Indexed]) -> Future[Any]:
        """`store`, one image after the other (what `store_many` must agree with)."""
        def run(catalog: Catalog, gen: int) -> dict[int, int]:
            rekeyed: dict[int, int] = {}
            for item in items:
                self._store_one(catalog, gen, item, rekeyed)
            return rekeyed
        return self.submit(run)

    def _store_one(self, catalog: Catalog, gen: int, item: Indexed, rekeyed: dict[int, int]) -> None:
        catalog.dequeue(item.image_id, item.seq)
        image_id = item.image_id
        before = catalog.get(image_id)  # the content it had: a description is for that content
        if before is not None and item.sidecar_id and self._takes_sidecar_id(catalog, before, item.sidecar_id):
            catalog.rekey(image_id, item.sidecar_id)
            rekeyed[image_id] = image_id = item.sidecar_id
            before = catalog.get(image_id)
        elif before is not None and item.sidecar_id_checked and item.sidecar_id and item.sidecar_id != image_id \
                and before.hash == item.digest and catalog.get(item.sidecar_id) is None:
            # Its own sidecar came back for this content (restored from the trash after the image, which was
            # indexed meanwhile under a new id) — without models, so it was read in full rather than `touch`ed.
            catalog.take_id(image_id, item.sidecar_id, gen)
            rekeyed[image_id] = image_id = item.sidecar_id
            before = catalog.get(image_id)
        if not _content_changed(catalog, image_id, item.stat, item.digest, gen):
            return
        if item.phash is not None:
            catalog.set_phash(image_id, item.digest, item.phash)
        row = catalog.get(image_id)
        machine = item.tags
        if row is not None and before is not None and row.described and before.hash == item.digest:
            machine = machine + llm_tags(row.llm_dict, machine)  # same content: its description stands
        elif row is not None and row.described:
            catalog.set_described(image_id, None, {}, None, row.tag_list, gen)  # describe again
        if row is not None and before is not None and before.hash != item.digest and row.ocr_by:
            catalog.set_ocr(image_id, None, {}, None, gen)  # new content: its text is read again
            row = catalog.get(image_id)
        if item.ocr is not None and row is not None and row.ocr_by is None:  # read before: its sidecar says so
            reader, read = item.ocr
            catalog.set_ocr(image_id, reader, ocr_reading(read), None, gen)
        tags, text, rejected, shown = effective(machine, item.embedded, item.side,
                                                 row.rejected_list if row else [], geo_of(row))
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
            embedded=item.embedded, facts=with_shown(item.facts, shown),
            side_hash=item.side.digest if item.side else None,
            same_content=before is not None and before.hash == item.digest)

    def _takes_sidecar_id(self, catalog: Catalog, row: ImageRow, wanted: int | None) -> bool:
        """A row registered just now (never indexed) takes the id its sidecar carries, when that is free and no
        earlier catalog (a rebuild's) gave it one: links and views made before a rebuild, or on another
        machine, still name it."""
        if wanted is None or wanted == row.id or row.state != "pending" or row.hash is not None \
                or row.path in self._ids:
            return False
        # A deleted id is free (its tombstone takes the old documents out of the indexes before the row's go in):
        # an image restored from the trash with its sidecar soon after takes its id back.
        return catalog.get(wanted) is None

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
              sidecar_id: int | None = None) -> Future[Any]:
        """A file whose content did not change (a new mtime, or only its sidecar changed): the catalog learns
        the new stat and what the sidecar says now; no decode, no model. `sidecar_id`: the id a sidecar that came
        back carries for this very content (an image restored from the trash before its sidecar got a new id):
        the row takes it back when it is free. Returns {old id: new id} when it did."""
        def run(catalog: Catalog, gen: int) -> dict[int, int]:
            catalog.dequeue(image_id, seq)
            now, row = image_id, catalog.get(image_id)
            if row is not None and row.hash == digest and sidecar_id and sidecar_id != image_id \
                    and catalog.get(sidecar_id) is None:
                catalog.take_id(image_id, sidecar_id, gen)
                now = sidecar_id
            if _content_changed(catalog, now, st, digest, gen) and side is not None:
                _record_sidecar(catalog, now, side, gen)
            return {image_id: now} if now != image_id else {}
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

    def text_read(self, image_id: int, reader: str, ocr: dict[str, Any], error: str | None,
                  side: SidecarState | None, digest: str | None) -> Future[Any]:
        """The text the OCR model read in an image (or why it could not); then what the sidecar says now."""
        def run(catalog: Catalog, gen: int) -> None:
            row = catalog.get(image_id)
            if row is None or row.state != "done" or (digest is not None and row.hash != digest):
                return  # gone, or changed while it was read: it is read again
            catalog.set_ocr(image_id, reader, ocr, error, gen)
            if side is not None:
                _record_sidecar(catalog, image_id, side, gen)
        return self.submit(run)

    def read_text_again(self, ids: list[int]) -> Future[Any]:
        """A reindex: the text of these images is read again."""
        return self.submit(lambda catalog, gen: catalog.forget_ocr(ids))

    def sidecars_dropped(self, paths: list[bytes]) -> Future[Any]:
        return self.submit(lambda catalog, gen: catalog.forget_sidecar_drops(paths))

    def folders_scanned(self, deep: list[bytes], shallow: list[bytes], errors: list[tuple[bytes, str]]) -> Future[Any]:
        return self.submit(lambda catalog, gen: catalog.set_folder_errors(deep, shallow, errors))

    def sidecar_read(self, image_id: int, side: SidecarState) -> Future[Any]:
        """A person's edit through pixdex was written to the sidecar: index what it says now."""
        return self.submit(lambda catalog, gen: _record_sidecar(catalog, image_id, side, gen))

    def sidecars_read(self, sides: list[tuple[int, SidecarState]]) -> Future[Any]:
        """The same for many items edited at once (`PATCH /items`): one command, so one transaction and one
        text-index commit hold them all."""
        def run(catalog: Catalog, gen: int) -> None:
            for image_id, side in sides:
                _record_sidecar(catalog, image_id, side, gen)
        return self.submit(run)

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


def _stale_reason(row: ImageRow) -> str:
    if row.state != "done":
        return "not indexed yet"
    return "waiting for models" if row.clip_model is None else "indexed by other models"


def _record_sidecar(catalog: Catalog, image_id: int, side: SidecarState, gen: int) -> None:
    row = catalog.get(image_id)
    if row is None or row.state != "done":
        return
    tags, text, rejected, shown = effective(row.machine_tags, json.loads(row.embedded), side, row.rejected_list,
                                            geo_of(row))
    catalog.set_sidecar(image_id, tags, text, side.signature, rejected, side.error,
                        with_shown(row.fact_dict, shown), gen, side.digest)


def llm_tags(llm: dict[str, Any], have: list[dict[str, object]]) -> list[dict[str, object]]:
    """The LLM's keywords as machine tags (source "llm"), leaving out those the other taggers found."""
    seen = {str(t["name"]).casefold() for t in have}
    out: list[dict[str, object]] = []
    for keyword in llm.get("keywords", []):
        if isinstance(keyword, str) and keyword.strip() and keyword.strip().casefold() not in seen:
            seen.add(keyword.strip().casefold())
            out.append({"name": keyword.strip(), "confidence": 1.0, "category": "general", "source": "llm"})
    return out


def _content_changed(catalog: Catalog, image_id: int, st: FileStat, digest: str | None, gen: int) -> bool:
    """Record the content the pipeline read (stat taken from the open file); False if the row is gone.

    The path is not taken from `st`: the file may have moved while it was being processed.
    """
    found = catalog.db.execute("SELECT path FROM images WHERE id = ?", (image_id,)).fetchone()
    if found is None:
        return False
    catalog.set_file(image_id, FileStat(found[0], st.dev, st.ino, st.size, st.mtime_ns), digest, gen)
    return True
