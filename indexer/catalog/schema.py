"""The catalog's schema, as the steps that build it: `MIGRATIONS[n]` takes a catalog from version n to n + 1.

The version is kept in ``PRAGMA user_version``; `Catalog` applies the missing steps at open, each in one
transaction. A step is never edited once released: a change of the schema is a new step.
"""

from __future__ import annotations

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
    INSERT INTO live SELECT 'clip', model, CAST(strftime('%s', 'now') AS REAL) FROM embeddings
        GROUP BY model ORDER BY count(*) DESC LIMIT 1;
    """,
    # 7: `sidecar_drops`: deleted images whose sidecar (if pixdex's alone) is still to remove — written with the
    # deletion, gone once removed, so a crash in between leaves no sidecar behind for good. `folder_errors`:
    # folders the last scan could not read (their rows are kept; they are scanned again once readable).
    """
    CREATE TABLE sidecar_drops (path BLOB PRIMARY KEY, since REAL NOT NULL);
    CREATE TABLE folder_errors (path BLOB PRIMARY KEY, reason TEXT NOT NULL, since REAL NOT NULL);
    """,
    # 8: perceptual hashes (`phashes`): the DCT hash of each image's decoded pixels, for finding copies and near-copies
    # (`pixdex duplicates`). `of` is the content hash it was computed from (a row whose content changed has none
    # until the new content is decoded); an empty `phash` marks content that could not be decoded for it.
    """
    CREATE TABLE phashes (image_id INTEGER PRIMARY KEY, of TEXT NOT NULL, phash BLOB NOT NULL);
    """,
    # 9: the text an OCR model read in the image ([ocr]): `ocr` holds it (`text`, `lines`), `ocr_by` the reader
    # id that made it (NULL: not read yet, or the content changed since, or a reindex asked for it again),
    # `ocr_error` why an image could not be read (not tried again until it changes or the reader does).
    """
    ALTER TABLE images ADD COLUMN ocr TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE images ADD COLUMN ocr_by TEXT;
    ALTER TABLE images ADD COLUMN ocr_error TEXT;
    """,
    # 10: embeddings at half precision (IEEE f16, little-endian): half the bytes of float32, and the same search
    # results (docs/BENCHMARKS.md; the vector file and the sidecars already hold f16). `pixdex_f16` is the
    # conversion `Catalog` registers on its connection for this step (`rows.f32_to_f16`).
    """
    UPDATE embeddings SET vector = pixdex_f16(vector);
    """,
    # 11: rows by inode, for a move whose two ends are seen by different scans (`scan.moves`).
    """
    CREATE INDEX images_inode ON images(ino);
    """,
    # 12: how much detail each perceptual hash carries (`phashes.detail`, `indexer.phash`): a flat or smooth image's
    # DCT hash is noise, alike for every such image, so `pixdex duplicates` compares only hashes with enough detail.
    # The hashes from before have none (NULL): the backfill hashes their images again (a draft decode, no model);
    # content that could not be decoded (an empty hash) is not tried again.
    """
    ALTER TABLE phashes ADD COLUMN detail INTEGER;
    UPDATE phashes SET detail = 0 WHERE length(phash) = 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
