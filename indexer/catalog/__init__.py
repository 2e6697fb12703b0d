"""The SQLite catalog: the source of truth for files, the work queue, embeddings and generations.

One row per image, keyed by a stable 63-bit id that is the key in both indexes and survives
renames and moves. Paths are bytes, so names that are not valid UTF-8 are kept exactly. A row's
stat, hash and data describe the content that is *indexed*; a file whose bytes changed keeps its
old row (still searchable) plus a `queue` entry until the new content commits in one transaction.

Every commit bumps ``meta.generation`` and stamps the rows it touched with it (``images.gen``);
deleted ids leave a ``tombstones`` row. The vector and text indexes record the generation they
reflect, so either can be topped up from here with exactly what it lacks, without inference.

The schema is versioned in ``PRAGMA user_version`` and upgraded step by step (`schema.MIGRATIONS`).
Only the writer (`indexer.writer`) calls the mutating methods; readers open it read-only.

`Catalog` is one connection; its methods live with what they touch: `queries` (reads), `writes` (mutations),
`embeddings` (stored vectors and the live model), `phashes` (perceptual hashes); `rows` holds the values they return.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from pixdex.indexer.catalog.embeddings import Embeddings
from pixdex.indexer.catalog.phashes import Phashes
from pixdex.indexer.catalog.queries import Queries
from pixdex.indexer.catalog.rows import f32_to_f16
from pixdex.indexer.catalog.schema import MIGRATIONS, SCHEMA_VERSION
from pixdex.indexer.catalog.writes import Writes
from pixdex.indexer.errors import CatalogError

WAL_LIMIT = 64 << 20  # bytes of WAL after which a commit checkpoints and truncates it (`Catalog.trim_wal`)
WAL_WAIT_MS = 200  # how long that checkpoint waits for readers to finish their read


class Catalog(Queries, Embeddings, Phashes, Writes):
    """One connection to the catalog: read-only for readers, read-write (WAL) for the writer."""

    wal_limit = WAL_LIMIT

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        try:
            if read_only:
                self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                                          isolation_level=None)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")  # a WAL reset leaves it this size
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA busy_timeout = 10000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{path}: cannot open the catalog ({exc}); move the data directory away to "
                               "start afresh") from exc

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CatalogError(f"{self.path}: catalog schema {version} is newer than this pixdex "
                               f"({SCHEMA_VERSION}); upgrade pixdex or move the data directory away")
        if version < SCHEMA_VERSION and self.read_only:
            raise CatalogError(f"{self.path}: catalog schema {version} is older than this pixdex "
                               f"({SCHEMA_VERSION}); run `pixdex index` once to upgrade it")
        if version < SCHEMA_VERSION:
            self.db.create_function("pixdex_f16", 1, f32_to_f16, deterministic=True)  # migration 10
        for number in range(version, SCHEMA_VERSION):
            self.db.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; "
                                  "COMMIT;")

    def trim_wal(self) -> bool:
        """Checkpoint the WAL into the catalog and truncate it once it holds more than `wal_limit` bytes (the
        writer asks after every commit), so it does not grow with a large build; True when it was truncated.
        Readers in the middle of a read are waited for a moment at most: if they hold it, the next commit tries."""
        try:
            size = os.path.getsize(f"{self.path}-wal")
        except OSError:
            return False
        if size <= self.wal_limit:
            return False
        self.db.execute(f"PRAGMA busy_timeout = {WAL_WAIT_MS}")
        try:
            busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            self.db.execute("PRAGMA busy_timeout = 10000")
        return not busy

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    """``with catalog.transaction():`` — BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")
