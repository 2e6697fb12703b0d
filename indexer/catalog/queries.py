"""Reads of the catalog: image rows, the queue, bookkeeping (generations, collections, folder errors, sidecars
to remove) and the describer's progress. Every reader (the pipeline's feed, the scanner, queries, `check`,
`status`) reads through these; none of them changes anything.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator

from pixdex.indexer.catalog.rows import COLUMNS, PRIORITY_NAMES, ImageRow, QueueEntry

CHUNK = 500  # ids per `IN (…)`: SQLite's limit on bound values is well above it


def in_chunks(ids: Iterable[int]) -> Iterator[tuple[list[int], str]]:
    """`ids` in chunks, each with its ``?,?,…`` placeholders for an ``IN (…)`` clause."""
    ids = list(ids)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        yield chunk, ",".join("?" * len(chunk))


class Queries:
    """The catalog's reads (mixed into `Catalog`)."""

    db: sqlite3.Connection

    def _rows(self, sql: str, params: Iterable[object] = ()) -> list[ImageRow]:
        return [ImageRow(*r) for r in self.db.execute(f"SELECT {COLUMNS} FROM images {sql}", tuple(params))]

    def all_rows(self) -> list[ImageRow]:
        return self._rows("ORDER BY path")

    def queued_ids(self) -> set[int]:
        return {int(i) for (i,) in self.db.execute("SELECT image_id FROM queue")}

    def get(self, image_id: int) -> ImageRow | None:
        rows = self._rows("WHERE id = ?", (image_id,))
        return rows[0] if rows else None

    def get_many(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        out: dict[int, ImageRow] = {}
        for chunk, marks in in_chunks(ids):
            out.update({r.id: r for r in self._rows(f"WHERE id IN ({marks})", chunk)})
        return out

    def paths(self, ids: list[int]) -> dict[int, bytes]:
        """The current path of each id that still has a row."""
        out: dict[int, bytes] = {}
        for chunk, marks in in_chunks(ids):
            out.update((int(i), bytes(p)) for i, p in self.db.execute(
                f"SELECT id, path FROM images WHERE id IN ({marks})", chunk))
        return out

    def by_date(self, limit: int) -> list[tuple[int, bytes, str | None, int]]:
        """(id, path, taken, mtime_ns) of up to `limit` indexed images, newest first: by the date taken, else the
        file's time (the timeline)."""
        return [(int(i), bytes(p), t, int(m)) for i, p, t, m in self.db.execute(
            "SELECT id, path, taken, mtime_ns FROM images WHERE state = 'done' "
            "ORDER BY coalesce(substr(taken, 1, 19), strftime('%Y-%m-%dT%H:%M:%S', mtime_ns / 1e9, 'unixepoch')) DESC, "
            "id LIMIT ?", (limit,))]

    def with_inodes(self, inodes: Iterable[int]) -> list[ImageRow]:
        """The rows recorded with any of these inode numbers (on any device)."""
        out: list[ImageRow] = []
        for chunk, marks in in_chunks(set(inodes)):
            out += self._rows(f"WHERE ino IN ({marks})", chunk)
        return out

    def by_path(self, path: bytes) -> ImageRow | None:
        rows = self._rows("WHERE path = ?", (path,))
        return rows[0] if rows else None

    def under(self, root: bytes) -> Iterator[ImageRow]:
        """Every row whose path is `root` or lies below it."""
        prefix = root.rstrip(b"/") + b"/"
        yield from self._rows("WHERE path = ? OR substr(path, 1, ?) = ?", (root, len(prefix), prefix))

    def under_paths(self, paths: Iterable[os.PathLike[str] | str]) -> list[ImageRow]:
        """Every row at or below these files or folders (real paths), each once."""
        rows = {row.id: row for p in paths for row in self.under(os.fsencode(os.path.realpath(p)))}
        return list(rows.values())

    def with_state(self, state: str) -> list[ImageRow]:
        return self._rows("WHERE state = ? ORDER BY path", (state,))

    def with_sidecar_errors(self) -> list[ImageRow]:
        return self._rows("WHERE sidecar_error IS NOT NULL ORDER BY path")

    def counts(self) -> dict[str, int]:
        counts = {"pending": 0, "done": 0, "failed": 0}
        counts.update(dict(self.db.execute("SELECT state, count(*) FROM images GROUP BY state").fetchall()))
        return counts

    def sidecar_failures(self) -> int:
        """Sidecars pixdex could not write (they are read and indexed anyway)."""
        return int(self.db.execute("SELECT count(*) FROM images WHERE sidecar_error IS NOT NULL").fetchone()[0])

    def waiting_for_models(self) -> int:
        """Images indexed without models (reduced mode): their names and metadata only."""
        return int(self.db.execute("SELECT count(*) FROM images WHERE state = 'done' AND clip_model IS NULL")
                   .fetchone()[0])

    def describe_next(self, describer: str, limit: int = 1, skip: Iterable[int] = ()) -> list[ImageRow]:
        """Indexed images not yet described by `describer` (and not failed by it), oldest first."""
        skip = set(skip)
        rows = self._rows("WHERE state = 'done' AND (described IS NULL OR described != ?) ORDER BY id LIMIT ?",
                          (describer, limit + len(skip)))
        return [r for r in rows if r.id not in skip][:limit]

    def describe_counts(self, describer: str) -> dict[str, int]:
        pending, failed, done = self.db.execute(
            "SELECT sum(described IS NULL OR described != ?), sum(described = ? AND describe_error IS NOT NULL), "
            "sum(described = ? AND describe_error IS NULL) FROM images WHERE state = 'done'",
            (describer, describer, describer)).fetchone()
        return {"pending": int(pending or 0), "failed": int(failed or 0), "described": int(done or 0)}

    def ocr_next(self, reader: str, limit: int = 1, skip: Iterable[int] = ()) -> list[ImageRow]:
        """Indexed images whose text `reader` has not read yet (nor failed to), oldest first."""
        skip = set(skip)
        rows = self._rows("WHERE state = 'done' AND (ocr_by IS NULL OR ocr_by != ?) ORDER BY id LIMIT ?",
                          (reader, limit + len(skip)))
        return [r for r in rows if r.id not in skip][:limit]

    def ocr_counts(self, reader: str) -> dict[str, int]:
        pending, failed, done, with_text = self.db.execute(
            "SELECT sum(ocr_by IS NULL OR ocr_by != ?), sum(ocr_by = ? AND ocr_error IS NOT NULL), "
            "sum(ocr_by = ? AND ocr_error IS NULL), sum(ocr_by = ? AND ocr_error IS NULL AND ocr != '{}' "
            "AND json_extract(ocr, '$.lines') > 0) FROM images WHERE state = 'done'",
            (reader, reader, reader, reader)).fetchone()
        return {"pending": int(pending or 0), "failed": int(failed or 0), "read": int(done or 0),
                "with_text": int(with_text or 0)}

    def queue_counts(self) -> dict[str, int]:
        found = dict(self.db.execute("SELECT priority, count(*) FROM queue GROUP BY priority").fetchall())
        return {name: int(found.get(p, 0)) for p, name in PRIORITY_NAMES.items()}

    def queued(self, limit: int, skip: Iterable[int] = ()) -> list[QueueEntry]:
        """The next `limit` queue entries by priority then age, leaving out the ids in `skip`."""
        skip = set(skip)
        rows = self.db.execute(
            f"SELECT {COLUMNS}, queue.priority, queue.seq, queue.reason FROM queue "
            "JOIN images ON images.id = queue.image_id ORDER BY queue.priority, queue.seq LIMIT ?",
            (limit + len(skip),)).fetchall()
        width = len(ImageRow.__dataclass_fields__)
        entries = [QueueEntry(ImageRow(*r[:width]), *r[width:]) for r in rows]
        return [e for e in entries if e.row.id not in skip][:limit]

    def queued_among(self, ids: list[int]) -> set[int]:
        """Those of `ids` that have a queue entry."""
        out: set[int] = set()
        for chunk, marks in in_chunks(ids):
            out.update(int(i) for (i,) in self.db.execute(
                f"SELECT image_id FROM queue WHERE image_id IN ({marks})", chunk))
        return out

    def is_queued(self, image_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM queue WHERE image_id = ?", (image_id,)).fetchone() is not None

    def meta(self, key: str, default: int = 0) -> int:
        found = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(found[0]) if found else default

    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def changed_since(self, generation: int) -> tuple[list[ImageRow], list[int]]:
        """Rows stamped after `generation`, and ids deleted after it."""
        rows = self._rows("WHERE gen > ?", (generation,))
        gone = [int(i) for (i,) in self.db.execute("SELECT image_id FROM tombstones WHERE gen > ?", (generation,))]
        return rows, gone

    def changed_ids_since(self, generation: int) -> tuple[list[int], list[int]]:
        """`changed_since`'s ids only (what the vector index needs of them)."""
        ids = [int(i) for (i,) in self.db.execute("SELECT id FROM images WHERE gen > ?", (generation,))]
        gone = [int(i) for (i,) in self.db.execute("SELECT image_id FROM tombstones WHERE gen > ?", (generation,))]
        return ids, gone

    def collections(self) -> list[tuple[str, bytes]]:
        """Folders added with `pixdex watch add`, as (name, real path)."""
        return [(str(n), bytes(p)) for n, p in self.db.execute("SELECT name, path FROM collections ORDER BY name")]

    def sidecar_drops(self) -> list[bytes]:
        return [bytes(p) for (p,) in self.db.execute("SELECT path FROM sidecar_drops ORDER BY path")]

    def folder_errors(self) -> list[tuple[bytes, str]]:
        return [(bytes(p), str(r)) for p, r in self.db.execute("SELECT path, reason FROM folder_errors ORDER BY path")]
