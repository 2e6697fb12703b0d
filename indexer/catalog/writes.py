"""Writes of the catalog: image rows, the queue, bookkeeping. Only the writer (`indexer.writer`) calls them,
inside its transaction; every reader opens the catalog read-only.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pixdex.indexer.catalog.rows import INT64_MAX, FileStat, vector_blob

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


@dataclass
class Done:
    """What `mark_done` records of one indexed image."""

    image_id: int
    clip_model: str | None
    tagger_model: str | None
    width: int
    height: int
    taken: str | None
    camera: str | None
    tags: list[dict[str, object]]
    metadata: str
    sidecar_error: str | None
    embedding: NDArray[np.float32] | None
    side: str | None = None
    rejected: list[str] = field(default_factory=list)
    embedded: dict[str, object] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)
    side_hash: str | None = None
    same_content: bool = False


_DONE = ("state = 'done', reason = NULL, clip_model = ?, tagger_model = ?, width = ?, height = ?, taken = ?, "
         "camera = ?, tags = ?, metadata = ?, sidecar_error = ?, updated = ?, side = ?, rejected = ?, embedded = ?, "
         "facts = ?, side_hash = ?")


def _done_values(d: Done, now: float) -> tuple[object, ...]:
    return (d.clip_model, d.tagger_model, d.width, d.height, d.taken, d.camera, json.dumps(d.tags), d.metadata,
            d.sidecar_error, now, d.side, json.dumps(d.rejected), json.dumps(d.embedded), json.dumps(d.facts),
            d.side_hash)


class Writes:
    """The catalog's mutations (mixed into `Catalog`)."""

    db: sqlite3.Connection

    def new_id(self) -> int:
        while True:
            candidate = secrets.randbits(63) or 1
            if self.db.execute("SELECT 1 FROM images WHERE id = ?", (candidate,)).fetchone() is None:
                return candidate

    def insert(self, st: FileStat, gen: int, wanted: int | None = None) -> int:
        """A new row for a file, under `wanted` when that id is free (a rebuild keeps ids), else a new one."""
        now = time.time()
        taken = wanted is None or not 1 <= wanted <= INT64_MAX or self.db.execute(
            "SELECT 1 FROM images WHERE id = ? UNION ALL SELECT 1 FROM tombstones WHERE image_id = ?",
            (wanted, wanted)).fetchone() is not None
        image_id = self.new_id() if taken else int(wanted)  # type: ignore[arg-type]
        self.db.execute(
            "INSERT INTO images (id, path, dev, ino, size, mtime_ns, hash, state, created, updated, gen) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL, 'pending', ?, ?, ?)",
            (image_id, st.path, st.dev, st.ino, st.size, st.mtime_ns, now, now, gen))
        return image_id

    def insert_many(self, stats: list[FileStat], gen: int, wanted: list[int | None]) -> list[int]:
        """`insert` for many files at once: each under its `wanted` id when that is free, else a new one."""
        asked = [w for w in wanted if w is not None and 1 <= w <= INT64_MAX]
        fresh = [secrets.randbits(63) or 1 for _ in wanted]
        taken = self._existing(asked + fresh)  # a new id is checked like `new_id`'s, all in one go
        ids: list[int] = []
        for want, spare in zip(wanted, fresh, strict=True):
            if want is None or not 1 <= want <= INT64_MAX or want in taken:
                want = spare
                while want in taken:
                    want = self.new_id()
            taken.add(want)
            ids.append(want)
        now = time.time()
        self.db.executemany(
            "INSERT INTO images (id, path, dev, ino, size, mtime_ns, hash, state, created, updated, gen) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL, 'pending', ?, ?, ?)",
            sorted((i, st.path, st.dev, st.ino, st.size, st.mtime_ns, now, now, gen)
                   for i, st in zip(ids, stats, strict=True)))
        return ids

    def _existing(self, ids: list[int]) -> set[int]:
        """Those of `ids` that a row or a tombstone has."""
        found: set[int] = set()
        for start in range(0, len(ids), 400):
            chunk = ids[start:start + 400]
            marks = ",".join("?" * len(chunk))
            found.update(int(i) for (i,) in self.db.execute(
                f"SELECT id FROM images WHERE id IN ({marks}) UNION SELECT image_id FROM tombstones WHERE image_id "
                f"IN ({marks})", (*chunk, *chunk)))
        return found

    def rekey(self, old: int, new: int) -> None:
        """A row never indexed takes another id (the one its sidecar carries)."""
        for table, column in (("images", "id"), ("queue", "image_id"), ("embeddings", "image_id"),
                              ("phashes", "image_id")):
            self.db.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))

    def take_id(self, old: int, new: int, gen: int) -> None:
        """An indexed row takes another (free) id, the one its sidecar carries: the old id's documents leave the
        indexes (a tombstone) and the row's come in under the new one (stamped with `gen`)."""
        self.rekey(old, new)
        self.db.execute("INSERT INTO tombstones (image_id, gen) VALUES (?, ?)", (old, gen))
        self.db.execute("UPDATE images SET gen = ? WHERE id = ?", (gen, new))

    def set_file(self, image_id: int, st: FileStat, digest: str | None, gen: int) -> None:
        self.db.execute("UPDATE images SET path = ?, dev = ?, ino = ?, size = ?, mtime_ns = ?, hash = ?, "
                        "updated = ?, gen = ? WHERE id = ?",
                        (st.path, st.dev, st.ino, st.size, st.mtime_ns, digest, time.time(), gen, image_id))

    def mark_done(self, image_id: int, *, clip_model: str | None, tagger_model: str | None, width: int, height: int,
                  taken: str | None, camera: str | None, tags: list[dict[str, object]],
                  metadata: str, sidecar_error: str | None, embedding: NDArray[np.float32] | None,
                  side: str | None = None, rejected: list[str] | None = None,
                  embedded: dict[str, object] | None = None, facts: dict[str, object] | None = None,
                  side_hash: str | None = None, same_content: bool = False) -> None:
        """Record an indexed image; without an embedding (no models) it waits for models (clip_model NULL).
        With `same_content` (re-embedded by a new model), the live model's vector of it stays."""
        self.mark_done_many([Done(image_id, clip_model, tagger_model, width, height, taken, camera, tags, metadata,
                                  sidecar_error, embedding, side, rejected or [], embedded or {}, facts or {},
                                  side_hash, same_content)])

    def mark_done_many(self, done: list[Done], stat: list[FileStat | None] | None = None,
                       digests: list[str | None] | None = None, gen: int | None = None) -> None:
        """`mark_done` for many rows at once (a statement each, over all of them). With `stat`, `digests` and
        `gen` each row also takes the file's stat and content hash (`set_file`) in the same statement."""
        now = time.time()
        if len({d.image_id for d in done}) == len(done):  # in the rows' order: each B-tree page is visited once
            order = sorted(range(len(done)), key=lambda n: done[n].image_id)
            done = [done[n] for n in order]
            stat = [stat[n] for n in order] if stat is not None else None
            digests = [digests[n] for n in order] if digests is not None else None
        if stat is None:
            self.db.executemany(f"UPDATE images SET {_DONE} WHERE id = ?",
                                [(*_done_values(d, now), d.image_id) for d in done])
        else:
            assert digests is not None and gen is not None
            self.db.executemany(
                f"UPDATE images SET path = ?, dev = ?, ino = ?, size = ?, mtime_ns = ?, hash = ?, gen = ?, {_DONE} "
                "WHERE id = ?",
                [(st.path, st.dev, st.ino, st.size, st.mtime_ns, digest, gen, *_done_values(d, now), d.image_id)
                 for d, st, digest in zip(done, stat, digests, strict=True) if st is not None])
        kept = [d for d in done if d.embedding is not None and d.clip_model is not None]
        self.db.executemany("DELETE FROM embeddings WHERE image_id = ?",
                            [(d.image_id,) for d in done if d.embedding is None or d.clip_model is None])
        # Another model's vector of the old content describes nothing any more.
        self.db.executemany("DELETE FROM embeddings WHERE image_id = ? AND model != ?",
                            [(d.image_id, d.clip_model) for d in kept if not d.same_content])
        self.db.executemany("INSERT OR REPLACE INTO embeddings (image_id, model, vector) VALUES (?, ?, ?)",
                            [(d.image_id, d.clip_model, vector_blob(d.embedding)) for d in kept
                             if d.embedding is not None])

    def mark_failed(self, image_id: int, reason: str) -> None:
        self.db.execute("UPDATE images SET state = 'failed', reason = ?, updated = ? WHERE id = ?",
                        (reason, time.time(), image_id))
        self.db.execute("DELETE FROM embeddings WHERE image_id = ?", (image_id,))

    def set_sidecar(self, image_id: int, tags: list[dict[str, object]], metadata: str, side: str | None,
                    rejected: list[str], error: str | None, facts: dict[str, object], gen: int,
                    side_hash: str | None = None) -> None:
        """What a (re-)read sidecar says: the keywords and text indexed, the version read, the rejections."""
        self.db.execute("UPDATE images SET tags = ?, metadata = ?, side = ?, rejected = ?, sidecar_error = ?, "
                        "facts = ?, gen = ?, updated = ?, side_hash = ? WHERE id = ?",
                        (json.dumps(tags), metadata, side, json.dumps(rejected), error, json.dumps(facts), gen,
                         time.time(), side_hash, image_id))

    def delete(self, ids: Iterable[int], gen: int) -> None:
        pairs = [(i,) for i in ids]
        self.db.executemany("DELETE FROM images WHERE id = ?", pairs)
        self.db.executemany("DELETE FROM embeddings WHERE image_id = ?", pairs)
        self.db.executemany("DELETE FROM phashes WHERE image_id = ?", pairs)
        self.db.executemany("DELETE FROM queue WHERE image_id = ?", pairs)
        self.db.executemany("INSERT INTO tombstones (image_id, gen) VALUES (?, ?)", [(i, gen) for (i,) in pairs])

    def enqueue(self, image_id: int, priority: int, reason: str, again: bool = False) -> None:
        """Queue `image_id`. An entry already there keeps the more urgent priority; with `again` it also
        gets a new seq, so a worker holding the old one leaves it queued (the file changed under it), and
        the new reason (a content change outranks a sidecar change: the full path reads the sidecar too). An id
        with no row (a scan read it before a store gave the row its sidecar's id) queues nothing: an entry no
        row has would stay queued for ever (found by the kill -9 trials)."""
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'queue_seq'")
        self.db.execute(
            "INSERT INTO queue (image_id, priority, reason, seq, enqueued) "
            "SELECT ?, ?, ?, (SELECT value FROM meta WHERE key = 'queue_seq'), ? "
            "WHERE EXISTS (SELECT 1 FROM images WHERE id = ?) "
            "ON CONFLICT (image_id) DO UPDATE SET priority = min(priority, excluded.priority), "
            "seq = CASE WHEN ? THEN excluded.seq ELSE seq END, "
            "reason = CASE WHEN ? THEN excluded.reason ELSE reason END",
            (image_id, priority, reason, time.time(), image_id, again, again and reason != "sidecar changed"))

    def enqueue_many(self, ids: list[int], priority: int, reason: str) -> None:
        """`enqueue` (not `again`) for many ids at once, each with the next seq."""
        if not ids:
            return
        seq = self.db.execute("SELECT value FROM meta WHERE key = 'queue_seq'").fetchone()[0]
        self.db.execute("UPDATE meta SET value = value + ? WHERE key = 'queue_seq'", (len(ids),))
        now = time.time()
        self.db.executemany(
            "INSERT INTO queue (image_id, priority, reason, seq, enqueued) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (image_id) DO UPDATE SET priority = min(priority, excluded.priority)",
            [(image_id, priority, reason, seq + n, now) for n, image_id in enumerate(ids, 1)])

    def requeue(self, image_id: int) -> None:
        """Give a queued entry a new seq: a worker holding the old one leaves it queued when it commits."""
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'queue_seq'")
        self.db.execute("UPDATE queue SET seq = (SELECT value FROM meta WHERE key = 'queue_seq') WHERE image_id = ?",
                        (image_id,))

    def dequeue(self, image_id: int, seq: int) -> None:
        """Drop the entry that was worked on; one re-queued meanwhile (a newer seq) stays."""
        self.db.execute("DELETE FROM queue WHERE image_id = ? AND seq <= ?", (image_id, seq))

    def set_described(self, image_id: int, describer: str | None, llm: dict[str, Any], error: str | None,
                      tags: list[dict[str, object]], gen: int) -> None:
        self.db.execute("UPDATE images SET described = ?, llm = ?, describe_error = ?, tags = ?, gen = ?, "
                        "updated = ? WHERE id = ?",
                        (describer, json.dumps(llm, ensure_ascii=False), error, json.dumps(tags), gen, time.time(),
                         image_id))

    def set_ocr(self, image_id: int, reader: str | None, ocr: dict[str, Any], error: str | None, gen: int) -> None:
        """The text `reader` read in an image (or why it could not); a None reader: to be read again."""
        self.db.execute("UPDATE images SET ocr = ?, ocr_by = ?, ocr_error = ?, gen = ?, updated = ? WHERE id = ?",
                        (json.dumps(ocr, ensure_ascii=False), reader, error, gen, time.time(), image_id))

    def forget_ocr(self, ids: Iterable[int]) -> None:
        """Read these images' text again (their current text stays searchable until then)."""
        self.db.executemany("UPDATE images SET ocr_by = NULL, ocr_error = NULL WHERE id = ?", [(i,) for i in ids])

    def set_meta(self, key: str, value: int) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value))

    def set_generation(self, generation: int) -> None:
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (generation,))

    def add_collection(self, name: str, path: bytes) -> None:
        self.db.execute("INSERT INTO collections VALUES (?, ?, ?)", (name, path, time.time()))

    def remove_collection(self, name: str) -> None:
        self.db.execute("DELETE FROM collections WHERE name = ?", (name,))

    def add_sidecar_drops(self, paths: Iterable[bytes]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO sidecar_drops VALUES (?, ?)", [(p, time.time()) for p in paths])

    def forget_sidecar_drops(self, paths: Iterable[bytes]) -> None:
        self.db.executemany("DELETE FROM sidecar_drops WHERE path = ?", [(p,) for p in paths])

    def set_folder_errors(self, deep: Iterable[bytes], shallow: Iterable[bytes],
                          errors: list[tuple[bytes, str]]) -> None:
        """What a scan of `deep` folders (with what is below) and `shallow` ones found unreadable, replacing
        what earlier scans of them found."""
        for folder in deep:
            below = folder.rstrip(b"/") + b"/"
            self.db.execute("DELETE FROM folder_errors WHERE path = ? OR substr(path, 1, ?) = ?",
                            (folder, len(below), below))
        self.db.executemany("DELETE FROM folder_errors WHERE path = ?", [(f,) for f in shallow])
        self.db.executemany("INSERT INTO folder_errors VALUES (?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                            "reason = excluded.reason", [(p, r, time.time()) for p, r in errors])

    def forget_folder_errors(self, roots: list[bytes], keep: list[bytes]) -> None:
        """The unreadable folders noted at or below `roots` (no longer watched), except those at or below `keep`."""
        def covered(path: bytes, folders: list[bytes]) -> bool:
            return any(path == f or path.startswith(f.rstrip(b"/") + b"/") for f in folders)

        gone = [(bytes(p),) for (p,) in self.db.execute("SELECT path FROM folder_errors")
                if covered(bytes(p), roots) and not covered(bytes(p), keep)]
        self.db.executemany("DELETE FROM folder_errors WHERE path = ?", gone)

    def forget_tombstones(self, upto: int) -> None:
        """Tombstones both indexes have applied are no longer needed."""
        self.db.execute("DELETE FROM tombstones WHERE gen <= ?", (upto,))
