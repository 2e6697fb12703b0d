"""The perceptual hashes of images (`phashes`): written with an image's indexing (`store`) or by the backfill of
rows indexed before (`indexer.phash_backfill`), read by `pixdex duplicates` (`query.duplicates`).

A hash belongs to the content it was computed from (`of`, the content hash): a row whose content changed shows
none until its new content is hashed, so a stale hash never groups a file with what it no longer is. Beside it,
its `detail` (`indexer.phash`): a hash stored before pixdex measured it (NULL) counts as none, to be hashed again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from pixdex.indexer.catalog.queries import in_chunks

SHORT_BYTES, LONG_BYTES = 8, 32  # a stored hash: the 64-bit one, then the 256-bit one (`indexer.phash`)
HASH_BYTES = SHORT_BYTES + LONG_BYTES
# The row's current content has a hash, with its detail (a hash from before schema 12 has none: it is done again).
HASHED = "(SELECT 1 FROM phashes p WHERE p.image_id = i.id AND p.of = i.hash AND p.detail IS NOT NULL)"


@dataclass(frozen=True)
class Phash:
    """A perceptual hash as stored: `bits`, the 64-bit then the 256-bit hash (empty: the content could not be
    decoded); `detail`, how many of the frequencies behind the 256-bit hash stand out of noise (`indexer.phash`)."""

    bits: bytes
    detail: int


UNDECODABLE = Phash(b"", 0)


def distance(a: bytes, b: bytes) -> int:
    """How many bits two stored hashes differ in, on their 256-bit part."""
    return (int.from_bytes(a[-LONG_BYTES:], "big") ^ int.from_bytes(b[-LONG_BYTES:], "big")).bit_count()


class Phashes:
    """Perceptual hashes (mixed into `Catalog`); the writes are the writer's only."""

    db: sqlite3.Connection

    def set_phash(self, image_id: int, of: str, phash: Phash) -> None:
        self.db.execute("INSERT OR REPLACE INTO phashes (image_id, of, phash, detail) VALUES (?, ?, ?, ?)",
                        (image_id, of, phash.bits, phash.detail))

    def drop_phashes(self, ids: Iterable[int]) -> None:
        self.db.executemany("DELETE FROM phashes WHERE image_id = ?", [(i,) for i in ids])

    def phashes(self, ids: Iterable[int] | None = None) -> list[tuple[int, Phash]]:
        """(id, hash) of every done row whose current content is hashed (of those in `ids`, when given)."""
        sql = ("SELECT i.id, p.phash, p.detail FROM images i JOIN phashes p ON p.image_id = i.id AND p.of = i.hash "
               "WHERE i.state = 'done' AND length(p.phash) > 0 AND p.detail IS NOT NULL")
        if ids is None:
            return [(int(i), Phash(bytes(h), int(d))) for i, h, d in self.db.execute(sql)]
        out: list[tuple[int, Phash]] = []
        for chunk, marks in in_chunks(ids):
            rows = self.db.execute(f"{sql} AND i.id IN ({marks})", chunk)
            out += [(int(i), Phash(bytes(h), int(d))) for i, h, d in rows]
        return out

    def unhashed(self, limit: int) -> list[tuple[int, bytes, str]]:
        """(id, path, content hash) of up to `limit` done rows whose current content has no perceptual hash yet
        (or one from before its detail was measured) and that are not queued (the pipeline hashes those as it decodes
        them)."""
        return [(int(i), bytes(p), str(h)) for i, p, h in self.db.execute(
            "SELECT i.id, i.path, i.hash FROM images i WHERE i.state = 'done' AND i.hash IS NOT NULL AND NOT EXISTS "
            f"{HASHED} AND NOT EXISTS "
            "(SELECT 1 FROM queue q WHERE q.image_id = i.id) LIMIT ?", (limit,))]

    def unhashed_count(self, ids: Iterable[int] | None = None) -> int:
        """How many done rows (of those in `ids`, when given) have no perceptual hash for their content yet."""
        sql = f"SELECT i.id FROM images i WHERE i.state = 'done' AND i.hash IS NOT NULL AND NOT EXISTS {HASHED}"
        if ids is None:
            return int(self.db.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0])
        return sum(len(self.db.execute(f"{sql} AND i.id IN ({marks})", chunk).fetchall())
                   for chunk, marks in in_chunks(ids))
