"""`store` for many images at once: the same decisions as storing them one by one (`Commands._store_one`), taken
in Python over rows read in a few queries, then written with one statement per kind of change over all of them
(`executemany`) — a handful of statements a batch instead of ten an image. `pixdex rebuild`, the fill after
`pixdex index --ray` and the daemon's pipeline all store through it.

An image takes this path unless its row is described by the LLM or has text read in content that is now replaced
(each reads and writes the row again): those are stored one by one, first, exactly as before. Nothing
here depends on order among the others: each touches its own row only (a row that takes its sidecar's id takes an
id no other row has). A batch that names an id twice, or whose sidecars ask for an id another image of
the batch has, is stored one by one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.queries import in_chunks
from pixdex.indexer.catalog.rows import FileStat, ImageRow
from pixdex.indexer.catalog.writes import Done
from pixdex.indexer.metadata.effective import effective

if TYPE_CHECKING:
    from pixdex.indexer.writer.commands import Commands, Indexed

REKEYED = ("images", "id"), ("queue", "image_id"), ("embeddings", "image_id"), ("phashes", "image_id")


def store_many(commands: Commands, catalog: Catalog, gen: int, items: list[Indexed],
               one: Callable[[Catalog, int, Indexed, dict[int, int]], None]) -> dict[int, int]:
    """Store `items` (see the module's docstring); `one` stores an image alone. Returns the rows that took their
    sidecar's id (old → new)."""
    rekeyed: dict[int, int] = {}
    ids = [item.image_id for item in items]
    before = catalog.get_many(ids)
    taking = _wanted_ids(commands, catalog, items, before)
    if len(set(ids)) != len(ids) or taking is None or any(item.sidecar_id_checked for item in items):
        for item in items:
            one(catalog, gen, item, rekeyed)
        return rekeyed
    bulk: list[Indexed] = []
    for item in items:
        row = before.get(item.image_id)
        if row is not None and (row.described or (row.ocr_by and row.hash != item.digest)):
            one(catalog, gen, item, rekeyed)  # its description, or the text read in its old content, row by row
        else:
            bulk.append(item)
    catalog.db.executemany("DELETE FROM queue WHERE image_id = ? AND seq <= ?",
                           [(item.image_id, item.seq) for item in bulk])
    moves = [(taking[item.image_id], item.image_id) for item in bulk if item.image_id in taking]
    for table, column in REKEYED:
        catalog.db.executemany(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", moves)
    rekeyed.update((old, new) for new, old in moves)
    done: list[Done] = []
    stats: list[FileStat | None] = []
    digests: list[str | None] = []
    phashes: list[tuple[int, str, bytes, int]] = []
    readings: list[tuple[int, str, dict[str, Any]]] = []  # text read before, restored from the sidecar
    for item in bulk:
        row = before.get(item.image_id)
        if row is None:
            continue  # gone since (deleted by a scan): nothing to store
        image_id = rekeyed.get(item.image_id, item.image_id)
        if image_id != row.id:
            row = dataclasses.replace(row, id=image_id)
        if item.phash is not None:
            phashes.append((image_id, item.digest, item.phash.bits, item.phash.detail))
        if item.ocr is not None and row.ocr_by is None:  # as one by one (a replaced content's text went there)
            readings.append((image_id, item.ocr[0], ocr_reading(item.ocr[1])))
        done.append(_done(commands, catalog, row, item))
        stats.append(FileStat(row.path, item.stat.dev, item.stat.ino, item.stat.size, item.stat.mtime_ns))
        digests.append(item.digest)
    catalog.db.executemany("INSERT OR REPLACE INTO phashes (image_id, of, phash, detail) VALUES (?, ?, ?, ?)",
                           phashes)
    catalog.mark_done_many(done, stats, digests, gen)
    for image_id, reader, reading in readings:
        catalog.set_ocr(image_id, reader, reading, None, gen)
    return rekeyed


def ocr_reading(text: str) -> dict[str, Any]:
    """The catalog's `ocr` of a reading restored from a sidecar (`Indexed.ocr`)."""
    return {"text": text, "lines": len(text.splitlines())}


def _wanted_ids(commands: Commands, catalog: Catalog, items: list[Indexed],
                before: dict[int, ImageRow]) -> dict[int, int] | None:
    """The rows that take the id their sidecar carries (row id → that id), as `Commands._takes_sidecar_id` decides
    one by one; None when the batch's own ids are among those asked for (then order would matter)."""
    asked: dict[int, int] = {}
    for item in items:
        row = before.get(item.image_id)
        wanted = item.sidecar_id
        if row is None or not wanted or wanted == row.id or row.state != "pending" or row.hash is not None \
                or row.path in commands._ids:
            continue
        asked[item.image_id] = wanted
    if not asked:
        return {}
    wanted_ids = list(asked.values())
    if len(set(wanted_ids)) != len(wanted_ids) or set(wanted_ids) & {item.image_id for item in items}:
        return None
    used: set[int] = set()
    for chunk, marks in in_chunks(wanted_ids):
        # A deleted id is free, as one by one (`Commands._takes_sidecar_id`): its tombstone takes the old
        # documents out of the indexes before the row's go in.
        used.update(int(i) for (i,) in catalog.db.execute(f"SELECT id FROM images WHERE id IN ({marks})", chunk))
    return {old: new for old, new in asked.items() if new not in used}


def _done(commands: Commands, catalog: Catalog, row: ImageRow, item: Indexed) -> Done:
    """What `mark_done` records for `item` over `row` (its row before this store)."""
    tags, text, rejected, shown = effective(item.tags, item.embedded, item.side, row.rejected_list, geo_of(row))
    # The capture date: EXIF (original → digitized → modified), then XMP/IPTC's creation date.
    taken = item.taken.isoformat() if item.taken else item.embedded.get("created") or None
    models = item.models or commands.models
    embedding = item.embedding if commands._vectors_for(catalog, models[0], item.embedding) else None
    side = item.side
    return Done(row.id, models[0] if embedding is not None else None,
                models[1] if embedding is not None else None, item.width, item.height, taken, item.camera, tags,
                text, side.error if side else None, embedding, side.signature if side else None, rejected,
                item.embedded, with_shown(item.facts, shown), side.digest if side else None,
                row.hash == item.digest)


def geo_of(row: ImageRow | None) -> dict[str, str] | None:
    """The GeoNames place the row has (kept when a sidecar job did not look it up)."""
    found = row.fact_dict.get("geo") if row is not None else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None


def with_shown(facts: dict[str, Any], shown: dict[str, Any]) -> dict[str, Any]:
    """The EXIF facts plus the rating (a filter) and description (for the web page) the image shows now."""
    out = {k: v for k, v in facts.items() if k not in shown}
    return out | {k: v for k, v in shown.items() if v is not None}
