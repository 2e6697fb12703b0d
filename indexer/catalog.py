"""The SQLite catalog: the source of truth for files, the work queue, embeddings and generations.

One row per image, keyed by a stable 63-bit id that is the key in both indexes and survives
renames and moves. Paths are bytes, so names that are not valid UTF-8 are kept exactly. A row's
stat, hash and data describe the content that is *indexed*; a file whose bytes changed keeps its
old row (still searchable) plus a `queue` entry until the new content commits in one transaction.

Every commit bumps ``meta.generation`` and stamps the rows it touched with it (``images.gen``);
deleted ids leave a ``tombstones`` row. The vector and text indexes record the generation they
reflect, so either can be topped up from here with exactly what it lacks, without inference.

The schema is versioned in ``PRAGMA user_version`` and upgraded step by step by `MIGRATIONS`.
Only the writer (`indexer.writer`) calls the mutating methods; readers open it read-only.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixdex.indexer.errors import CatalogError

if TYPE_CHECKING:  # numpy is imported where vectors are touched: `status` and `failures` stay light
    import numpy as np
    from numpy.typing import NDArray

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
    # 2: the persisted work queue, embeddings as the source of truth, generations and tombstones.
    """
    ALTER TABLE images ADD COLUMN gen INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX images_gen ON images (gen);
    CREATE TABLE queue (
        image_id INTEGER PRIMARY KEY,
        priority INTEGER NOT NULL,
        reason TEXT NOT NULL,
        seq INTEGER NOT NULL,
        enqueued REAL NOT NULL
    );
    CREATE INDEX queue_order ON queue (priority, seq);
    CREATE TABLE embeddings (image_id INTEGER PRIMARY KEY, model TEXT NOT NULL, vector BLOB NOT NULL);
    CREATE TABLE tombstones (image_id INTEGER NOT NULL, gen INTEGER NOT NULL);
    CREATE INDEX tombstones_gen ON tombstones (gen);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('generation', 1), ('queue_seq', 0);
    INSERT INTO queue SELECT id, 1, 'pending before the upgrade', 0, updated FROM images WHERE state = 'pending';
    """,
    # 3: folders added with `pixdex watch add` (named collections), beside the config file's.
    """
    CREATE TABLE collections (name TEXT PRIMARY KEY, path BLOB NOT NULL UNIQUE, added REAL NOT NULL);
    """,
    # 4: sidecars are watched too. `side` is the sidecar version last read (inode:size:mtime; NULL
    # when none), `rejected` the machine keywords a person removed, `embedded` the image's own metadata
    # (MWG-reconciled), kept so a sidecar change re-reads only the sidecar; `facts` what the filters use
    # (lens, focal, iso, lat, lon from EXIF; rating from the sidecar or the image). Rows from before have
    # `side` NULL: their sidecars are read once more at the next scan.
    """
    ALTER TABLE images ADD COLUMN side TEXT;
    ALTER TABLE images ADD COLUMN rejected TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE images ADD COLUMN embedded TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE images ADD COLUMN facts TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE images ADD COLUMN side_hash TEXT;
    """,
    # 5: descriptions from a local vision LLM ([describe]): `llm` holds its answer (description, keywords,
    # text), `described` the describer id that made it (NULL: not described, or the content changed since),
    # `describe_error` why an image could not be described (the describer does not try it again).
    """
    ALTER TABLE images ADD COLUMN described TEXT;
    ALTER TABLE images ADD COLUMN llm TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE images ADD COLUMN describe_error TEXT;
    """,
    # 6: embeddings of two CLIP models side by side while the configured one replaces the live one:
    # searches use the `live` model's vectors until every image that has one also has the new model's.
    """
    CREATE TABLE embeddings6 (image_id INTEGER NOT NULL, model TEXT NOT NULL, vector BLOB NOT NULL,
                              PRIMARY KEY (image_id, model));
    INSERT INTO embeddings6 SELECT image_id, model, vector FROM embeddings;
    DROP TABLE embeddings;
    ALTER TABLE embeddings6 RENAME TO embeddings;
    CREATE INDEX embeddings_model ON embeddings (model);
    CREATE TABLE live (what TEXT PRIMARY KEY, model TEXT NOT NULL, since REAL NOT NULL);
    INSERT INTO live SELECT 'clip', model, CAST(strftime('%s', 'now') AS REAL) FROM embeddings GROUP BY model ORDER BY count(*) DESC LIMIT 1;
    """,
    # 7: `sidecar_drops`: deleted images whose sidecar (if pixdex's alone) is still to remove — written with the
    # deletion, gone once removed, so a crash in between leaves no sidecar behind for good. `folder_errors`:
    # folders the last scan could not read (their rows are kept; they are scanned again once readable).
    """
    CREATE TABLE sidecar_drops (path BLOB PRIMARY KEY, since REAL NOT NULL);
    CREATE TABLE folder_errors (path BLOB PRIMARY KEY, reason TEXT NOT NULL, since REAL NOT NULL);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# Queue priorities, most urgent first.
ASKED, CHANGED, BACKFILL = 0, 1, 2
PRIORITY_NAMES = {ASKED: "asked", CHANGED: "new/changed", BACKFILL: "backfill"}

INT64_MAX = 2**63 - 1


def clamp_ns(value: int) -> int:
    """File times past 2262 or before 1677 do not fit SQLite's integers: keep them at the edge."""
    return max(-INT64_MAX - 1, min(INT64_MAX, value))


@dataclass(frozen=True)
class FileStat:
    path: bytes
    dev: int
    ino: int
    size: int
    mtime_ns: int
    side: str | None = field(default=None, compare=False)  # its sidecar's version, as the scanner saw it

    @classmethod
    def of(cls, path: bytes, st: os.stat_result, side: str | None = None) -> FileStat:
        return cls(path, st.st_dev, st.st_ino, st.st_size, clamp_ns(st.st_mtime_ns), side)

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
    gen: int
    side: str | None = None
    rejected: str = "[]"
    embedded: str = "{}"
    facts: str = "{}"
    side_hash: str | None = None  # BLAKE2b of the sidecar's bytes as last read
    described: str | None = None  # the describer id ([describe] model + prompt) of `llm`
    llm: str = "{}"  # the vision LLM's answer: description, keywords, text
    describe_error: str | None = None

    @property
    def llm_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.llm))

    @property
    def fact_dict(self) -> dict[str, object]:
        return dict(json.loads(self.facts))

    @property
    def fspath(self) -> Path:
        return Path(os.fsdecode(self.path))

    @property
    def stat(self) -> FileStat:
        return FileStat(self.path, self.dev, self.ino, self.size, self.mtime_ns)

    @property
    def tag_list(self) -> list[dict[str, object]]:
        return list(json.loads(self.tags))

    @property
    def machine_tags(self) -> list[dict[str, object]]:
        """The models' keywords (a person's keywords, from the sidecar or the image, carry category "person")."""
        return [t for t in self.tag_list if t.get("category") != "person"]

    @property
    def rejected_list(self) -> list[str]:
        return list(json.loads(self.rejected))

    def current_for(self, models: tuple[str, str | None]) -> bool:
        """Indexed as these models would index it. Without models (reduced mode, `models[0]` empty) any
        finished row is as current as it can get: what models made stays until models are back."""
        if self.state != "done":
            return False
        return not models[0] or (self.clip_model, self.tagger_model) == models

    @property
    def waits_for_models(self) -> bool:
        return self.state == "done" and self.clip_model is None

    def same_file(self, st: FileStat) -> bool:
        return (self.size, self.mtime_ns) == (st.size, st.mtime_ns)


@dataclass(frozen=True)
class QueueEntry:
    row: ImageRow
    priority: int
    seq: int
    reason: str


COLUMNS = ", ".join(f"images.{name}" for name in ImageRow.__dataclass_fields__)


def vector_blob(vector: NDArray[np.float32]) -> bytes:
    import numpy as np

    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def blob_vector(blob: bytes) -> NDArray[np.float32]:
    import numpy as np

    return np.frombuffer(blob, dtype=np.float32)


class Catalog:
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
        for number in range(version, SCHEMA_VERSION):
            self.db.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; "
                                  "COMMIT;")

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    # Reads -----------------------------------------------------------------------------------
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
        ids = list(ids)
        out: dict[int, ImageRow] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update({r.id: r for r in self._rows(f"WHERE id IN ({marks})", chunk)})
        return out

    def paths(self, ids: list[int]) -> dict[int, bytes]:
        """The current path of each id that still has a row."""
        out: dict[int, bytes] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update((int(i), bytes(p)) for i, p in self.db.execute(
                f"SELECT id, path FROM images WHERE id IN ({marks})", chunk))
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

    def sidecar_drops(self) -> list[bytes]:
        return [bytes(p) for (p,) in self.db.execute("SELECT path FROM sidecar_drops ORDER BY path")]

    def folder_errors(self) -> list[tuple[bytes, str]]:
        return [(bytes(p), str(r)) for p, r in self.db.execute("SELECT path, reason FROM folder_errors ORDER BY path")]

    def with_sidecar_errors(self) -> list[ImageRow]:
        return self._rows("WHERE sidecar_error IS NOT NULL ORDER BY path")

    def counts(self) -> dict[str, int]:
        counts = {"pending": 0, "done": 0, "failed": 0}
        counts.update(dict(self.db.execute("SELECT state, count(*) FROM images GROUP BY state").fetchall()))
        return counts

    def sidecar_failures(self) -> int:
        """Sidecars pixdex could not write (they are read and indexed anyway)."""
        return int(self.db.execute("SELECT count(*) FROM images WHERE sidecar_error IS NOT NULL").fetchone()[0])

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

    def set_described(self, image_id: int, describer: str | None, llm: dict[str, Any], error: str | None,
                      tags: list[dict[str, object]], gen: int) -> None:
        self.db.execute("UPDATE images SET described = ?, llm = ?, describe_error = ?, tags = ?, gen = ?, "
                        "updated = ? WHERE id = ?",
                        (describer, json.dumps(llm, ensure_ascii=False), error, json.dumps(tags), gen, time.time(),
                         image_id))

    def waiting_for_models(self) -> int:
        """Images indexed without models (reduced mode): their names and metadata only."""
        return int(self.db.execute("SELECT count(*) FROM images WHERE state = 'done' AND clip_model IS NULL")
                   .fetchone()[0])

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

    def meta(self, key: str, default: int = 0) -> int:
        found = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(found[0]) if found else default

    def collections(self) -> list[tuple[str, bytes]]:
        """Folders added with `pixdex watch add`, as (name, real path)."""
        return [(str(n), bytes(p)) for n, p in self.db.execute("SELECT name, path FROM collections ORDER BY name")]

    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def changed_since(self, generation: int) -> tuple[list[ImageRow], list[int]]:
        """Rows stamped after `generation`, and ids deleted after it."""
        rows = self._rows("WHERE gen > ?", (generation,))
        gone = [int(i) for (i,) in self.db.execute("SELECT image_id FROM tombstones WHERE gen > ?", (generation,))]
        return rows, gone

    def embeddings(self, model: str, ids: Iterable[int] | None = None,
                   since: int | None = None) -> Iterator[tuple[int, NDArray[np.float32]]]:
        """(id, vector) of done rows embedded by `model`: all, those in `ids`, or those stamped after `since`."""
        sql = ("SELECT e.image_id, e.vector FROM embeddings e JOIN images i ON i.id = e.image_id "
               "WHERE e.model = ? AND i.state = 'done'")
        if since is not None:
            yield from ((int(i), blob_vector(v)) for i, v in self.db.execute(sql + " AND i.gen > ?", (model, since)))
            return
        if ids is None:
            yield from ((int(i), blob_vector(v)) for i, v in self.db.execute(sql, (model,)))
            return
        chunk_ids = list(ids)
        for start in range(0, len(chunk_ids), 500):
            chunk = chunk_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            yield from ((int(i), blob_vector(v))
                        for i, v in self.db.execute(sql + f" AND e.image_id IN ({marks})", (model, *chunk)))

    def embedding_dim(self, model: str) -> int | None:
        """The dimension of `model`'s stored embeddings (None: it has none)."""
        found = self.db.execute("SELECT length(vector) FROM embeddings WHERE model = ? LIMIT 1", (model,)).fetchone()
        return int(found[0]) // 4 if found else None

    def live_model(self) -> str | None:
        """The CLIP model whose vectors searches use (None before any model embedded anything)."""
        found = self.db.execute("SELECT model FROM live WHERE what = 'clip'").fetchone()
        return str(found[0]) if found else None

    def switching_from(self, new: str) -> str | None:
        """The live model `new` is replacing, while there is one with vectors to keep; else None (nothing
        live yet, `new` itself, or a live model that embedded nothing: `new` simply becomes live)."""
        live = self.live_model()
        if live is None or live == new or self.db.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM embeddings WHERE model = ?)", (live,)).fetchone()[0]:
            return None
        return live

    def old_vectors_left(self, live: str, name: str) -> int:
        """Images with a vector by `live` but none yet by the model in folder `name` (whatever its files'
        fingerprint: status loads no model)."""
        pattern = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "@%"
        return int(self.db.execute(
            "SELECT count(*) FROM embeddings e JOIN images i ON i.id = e.image_id WHERE e.model = ? "
            "AND i.state = 'done' AND (i.clip_model IS NULL OR i.clip_model NOT LIKE ? ESCAPE '\\')",
            (live, pattern)).fetchone()[0])

    def has_old_vectors(self, live: str, new: str) -> bool:
        """Whether an image still has a vector by `live` and none by `new` (stops at the first one: it runs
        once per commit while re-embedding). While it does, `live` stays live."""
        return self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM embeddings e JOIN images i ON i.id = e.image_id WHERE e.model = ? "
            "AND i.state = 'done' AND (i.clip_model IS NULL OR i.clip_model != ?))", (live, new)).fetchone()[0] == 1

    def missing_embeddings(self, model: str) -> list[int]:
        """Done rows with no embedding by `model` (catalogs from before embeddings were stored)."""
        return [int(i) for (i,) in self.db.execute(
            "SELECT id FROM images WHERE state = 'done' AND id NOT IN "
            "(SELECT image_id FROM embeddings WHERE model = ?)", (model,))]

    # Writes (the writer's only, inside its transaction) ---------------------------------------
    def set_live(self, model: str) -> None:
        """`model` becomes the one searches use; every other model's vectors go."""
        self.db.execute("INSERT INTO live VALUES ('clip', ?, ?) ON CONFLICT (what) DO UPDATE SET "
                        "model = excluded.model, since = excluded.since", (model, time.time()))
        self.db.execute("DELETE FROM embeddings WHERE model != ?", (model,))

    def drop_embeddings_except(self, keep: Iterable[str]) -> int:
        """Vectors of models that are neither live nor being built (a switch given up, say)."""
        keep = list(keep)
        marks = ",".join("?" * len(keep))
        return self.db.execute(f"DELETE FROM embeddings WHERE model NOT IN ({marks})", keep).rowcount

    def set_meta(self, key: str, value: int) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value))

    def add_collection(self, name: str, path: bytes) -> None:
        self.db.execute("INSERT INTO collections VALUES (?, ?, ?)", (name, path, time.time()))

    def remove_collection(self, name: str) -> None:
        self.db.execute("DELETE FROM collections WHERE name = ?", (name,))

    def set_generation(self, generation: int) -> None:
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (generation,))

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

    def enqueue(self, image_id: int, priority: int, reason: str, again: bool = False) -> None:
        """Queue `image_id`. An entry already there keeps the more urgent priority; with `again` it also
        gets a new seq, so a worker holding the old one leaves it queued (the file changed under it), and
        the new reason (a content change outranks a sidecar change: the full path reads the sidecar too)."""
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'queue_seq'")
        self.db.execute(
            "INSERT INTO queue (image_id, priority, reason, seq, enqueued) "
            "VALUES (?, ?, ?, (SELECT value FROM meta WHERE key = 'queue_seq'), ?) "
            "ON CONFLICT (image_id) DO UPDATE SET priority = min(priority, excluded.priority), "
            "seq = CASE WHEN ? THEN excluded.seq ELSE seq END, "
            "reason = CASE WHEN ? THEN excluded.reason ELSE reason END",
            (image_id, priority, reason, time.time(), again, again and reason != "sidecar changed"))

    def rekey(self, old: int, new: int) -> None:
        """A row never indexed takes another id (the one its sidecar carries)."""
        for table, column in (("images", "id"), ("queue", "image_id"), ("embeddings", "image_id")):
            self.db.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))

    def requeue(self, image_id: int) -> None:
        """Give a queued entry a new seq: a worker holding the old one leaves it queued when it commits."""
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'queue_seq'")
        self.db.execute("UPDATE queue SET seq = (SELECT value FROM meta WHERE key = 'queue_seq') WHERE image_id = ?",
                        (image_id,))

    def queued_among(self, ids: list[int]) -> set[int]:
        """Those of `ids` that have a queue entry."""
        out: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(int(i) for (i,) in self.db.execute(
                f"SELECT image_id FROM queue WHERE image_id IN ({marks})", chunk))
        return out

    def is_queued(self, image_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM queue WHERE image_id = ?", (image_id,)).fetchone() is not None

    def dequeue(self, image_id: int, seq: int) -> None:
        """Drop the entry that was worked on; one re-queued meanwhile (a newer seq) stays."""
        self.db.execute("DELETE FROM queue WHERE image_id = ? AND seq <= ?", (image_id, seq))

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
        self.db.execute(
            "UPDATE images SET state = 'done', reason = NULL, clip_model = ?, tagger_model = ?, width = ?, "
            "height = ?, taken = ?, camera = ?, tags = ?, metadata = ?, sidecar_error = ?, updated = ?, side = ?, "
            "rejected = ?, embedded = ?, facts = ?, side_hash = ? WHERE id = ?",
            (clip_model, tagger_model, width, height, taken, camera, json.dumps(tags), metadata, sidecar_error,
             time.time(), side, json.dumps(rejected or []), json.dumps(embedded or {}), json.dumps(facts or {}),
             side_hash, image_id))
        if embedding is None or clip_model is None:
            self.db.execute("DELETE FROM embeddings WHERE image_id = ?", (image_id,))
            return
        if not same_content:  # another model's vector of the old content describes nothing any more
            self.db.execute("DELETE FROM embeddings WHERE image_id = ? AND model != ?", (image_id, clip_model))
        self.db.execute("INSERT OR REPLACE INTO embeddings (image_id, model, vector) VALUES (?, ?, ?)",
                        (image_id, clip_model, vector_blob(embedding)))

    def put_embedding(self, image_id: int, model: str, embedding: NDArray[np.float32]) -> None:
        self.db.execute("INSERT OR REPLACE INTO embeddings (image_id, model, vector) VALUES (?, ?, ?)",
                        (image_id, model, vector_blob(embedding)))

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
        self.db.executemany("DELETE FROM queue WHERE image_id = ?", pairs)
        self.db.executemany("INSERT INTO tombstones (image_id, gen) VALUES (?, ?)", [(i, gen) for (i,) in pairs])

    def add_sidecar_drops(self, paths: Iterable[bytes]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO sidecar_drops VALUES (?, ?)", [(p, time.time()) for p in paths])

    def forget_sidecar_drops(self, paths: Iterable[bytes]) -> None:
        self.db.executemany("DELETE FROM sidecar_drops WHERE path = ?", [(p,) for p in paths])

    def set_folder_errors(self, deep: Iterable[bytes], shallow: Iterable[bytes], errors: list[tuple[bytes, str]]) -> None:
        """What a scan of `deep` folders (with what is below) and `shallow` ones found unreadable, replacing
        what earlier scans of them found."""
        for folder in deep:
            below = folder.rstrip(b"/") + b"/"
            self.db.execute("DELETE FROM folder_errors WHERE path = ? OR substr(path, 1, ?) = ?",
                            (folder, len(below), below))
        self.db.executemany("DELETE FROM folder_errors WHERE path = ?", [(f,) for f in shallow])
        self.db.executemany("INSERT INTO folder_errors VALUES (?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                            "reason = excluded.reason", [(p, r, time.time()) for p, r in errors])

    def forget_tombstones(self, upto: int) -> None:
        """Tombstones both indexes have applied are no longer needed."""
        self.db.execute("DELETE FROM tombstones WHERE gen <= ?", (upto,))


class _Transaction:
    """``with catalog.transaction():`` — BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")
