"""The SQLite catalog of files: one row per image, keyed by a stable 64-bit id.

The id is the key in both indexes and survives renames and moves. Paths are stored as bytes,
so names that are not valid UTF-8 are kept exactly. The schema is versioned in
``PRAGMA user_version`` and upgraded step by step by `MIGRATIONS`. Only the writer
(`indexer.writer`) calls the mutating methods.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS: list[str] = [
    # 1: one row per image.
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,
        dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        hash TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
        reason TEXT,
        clip_model TEXT, tagger_model TEXT,
        width INTEGER, height INTEGER, taken TEXT, camera TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '',
        sidecar_error TEXT,
        created REAL NOT NULL, updated REAL NOT NULL
    );
    CREATE INDEX images_hash ON images (size, hash);
    CREATE INDEX images_state ON images (state);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class FileStat:
    path: bytes
    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: bytes, st: os.stat_result) -> FileStat:
        return cls(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def fspath(self) -> Path:
        return Path(os.fsdecode(self.path))


@dataclass(frozen=True)
class ImageRow:
    id: int
    path: bytes
    dev: int
    ino: int
    size: int
    mtime_ns: int
    hash: str | None
    state: str
    reason: str | None
    clip_model: str | None
    tagger_model: str | None
    width: int | None
    height: int | None
    taken: str | None
    camera: str | None
    tags: str
    metadata: str
    sidecar_error: str | None
    created: float
    updated: float

    @property
    def fspath(self) -> Path:
        return Path(os.fsdecode(self.path))

    @property
    def tag_list(self) -> list[dict[str, object]]:
        return list(json.loads(self.tags))

    def same_file(self, st: FileStat) -> bool:
        return (self.size, self.mtime_ns) == (st.size, st.mtime_ns)


COLUMNS = ", ".join(ImageRow.__dataclass_fields__)


class CatalogError(Exception):
    pass


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA busy_timeout = 10000")
        self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CatalogError(f"{self.path}: catalog schema {version} is newer than this pixdex "
                               f"({SCHEMA_VERSION}); upgrade pixdex or move the data directory away")
        for number in range(version, SCHEMA_VERSION):
            self.db.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; "
                                  "COMMIT;")

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> sqlite3.Connection:
        return _Transaction(self.db)  # type: ignore[return-value]

    # Reads -----------------------------------------------------------------------------------
    def _rows(self, sql: str, params: Iterable[object] = ()) -> list[ImageRow]:
        return [ImageRow(*r) for r in self.db.execute(f"SELECT {COLUMNS} FROM images {sql}", tuple(params))]

    def get(self, image_id: int) -> ImageRow | None:
        rows = self._rows("WHERE id = ?", (image_id,))
        return rows[0] if rows else None

    def get_many(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        ids = list(ids)
        out: dict[int, ImageRow] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update({r.id: r for r in self._rows(f"WHERE id IN ({marks})", chunk)})
        return out

    def by_path(self, path: bytes) -> ImageRow | None:
        rows = self._rows("WHERE path = ?", (path,))
        return rows[0] if rows else None

    def under(self, root: bytes) -> Iterator[ImageRow]:
        """Every row whose path is `root` or lies below it."""
        prefix = root.rstrip(b"/") + b"/"
        yield from self._rows("WHERE path = ? OR substr(path, 1, ?) = ?", (root, len(prefix), prefix))

    def with_state(self, state: str) -> list[ImageRow]:
        return self._rows("WHERE state = ? ORDER BY path", (state,))

    def with_sidecar_errors(self) -> list[ImageRow]:
        return self._rows("WHERE sidecar_error IS NOT NULL ORDER BY path")

    def counts(self) -> dict[str, int]:
        counts = {"pending": 0, "done": 0, "failed": 0}
        counts.update(dict(self.db.execute("SELECT state, count(*) FROM images GROUP BY state").fetchall()))
        return counts

    # Writes (the writer's only) ----------------------------------------------------------------
    def new_id(self) -> int:
        while True:
            candidate = secrets.randbits(63) or 1
            if self.db.execute("SELECT 1 FROM images WHERE id = ?", (candidate,)).fetchone() is None:
                return candidate

    def insert(self, st: FileStat, digest: str | None, state: str = "pending") -> int:
        now = time.time()
        image_id = self.new_id()
        self.db.execute(
            "INSERT INTO images (id, path, dev, ino, size, mtime_ns, hash, state, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image_id, st.path, st.dev, st.ino, st.size, st.mtime_ns, digest, state, now, now))
        return image_id

    def update_file(self, image_id: int, st: FileStat, digest: str | None) -> None:
        self.db.execute("UPDATE images SET path = ?, dev = ?, ino = ?, size = ?, mtime_ns = ?, hash = ?, "
                        "updated = ? WHERE id = ?",
                        (st.path, st.dev, st.ino, st.size, st.mtime_ns, digest, time.time(), image_id))

    def mark_done(self, image_id: int, *, clip_model: str, tagger_model: str | None, width: int, height: int,
                  taken: str | None, camera: str | None, tags: list[dict[str, object]],
                  metadata: str, sidecar_error: str | None) -> None:
        self.db.execute(
            "UPDATE images SET state = 'done', reason = NULL, clip_model = ?, tagger_model = ?, width = ?, "
            "height = ?, taken = ?, camera = ?, tags = ?, metadata = ?, sidecar_error = ?, updated = ? "
            "WHERE id = ?",
            (clip_model, tagger_model, width, height, taken, camera, json.dumps(tags), metadata, sidecar_error,
             time.time(), image_id))

    def mark_failed(self, image_id: int, reason: str) -> None:
        self.db.execute("UPDATE images SET state = 'failed', reason = ?, updated = ? WHERE id = ?",
                        (reason, time.time(), image_id))

    def mark_all_pending(self, reason: str) -> int:
        cursor = self.db.execute("UPDATE images SET state = 'pending', reason = ? WHERE state = 'done'", (reason,))
        return cursor.rowcount

    def delete(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])


class _Transaction:
    """``with catalog.transaction():`` — BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")
