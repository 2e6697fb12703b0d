"""Copies and near-copies of one photo (`find`): exact copies (the same content hash), resized, re-encoded,
format-converted and lightly cropped ones, found by the perceptual hashes the indexer stores (`indexer.phash`) —
and, apart, "similar shots" (bursts, the same scene a moment later) from the CLIP embeddings alone.

Every pair of images is compared on the 64-bit hash, in tiles of numpy's `bitwise_count` (a crop moves too many
bits for a BK-tree or an HNSW graph to find its pairs reliably; `bench/duplicates_bench.py` measures 100k); the
pairs within `short_limit` are confirmed on the 256-bit hash, and, when a real CLIP model made the embeddings
(never a stand-in's), on their cosine. Confirmed pairs are joined into groups (connected components), each with a
suggested keeper (`keeper.choose`). Two different photos differ in about half the bits: the default limit, a
quarter, keeps them apart.

That holds for hashes with detail only (`indexer.phash.detail`): a flat image, a smooth gradient or a bare horizon
gets about the same hash as every other such image, whatever its colours or direction, so two blank frames from
two cameras would look like copies. An image with less than `Limits.detail` is compared by its content alone: only
its byte-identical copies are grouped (a flat red JPEG and the same red as PNG are not: nothing in their pixels tells
one red frame from another).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.phashes import LONG_BYTES, SHORT_BYTES, distance
from pixdex.indexer.catalog.rows import ImageRow
from pixdex.indexer.layout import STANDIN_MARKER
from pixdex.indexer.paths import display_path
from pixdex.indexer.settings import Config
from pixdex.query.keeper import choose
from pixdex.query.parse import QueryError, parse_query
from pixdex.query.service import SearchService
from pixdex.query.text import matching_ids

LONG_BITS = LONG_BYTES * 8
DEFAULT_BITS = 64  # of the 256-bit hash: a 3% crop moves up to ~56, two different photos ~100 and more
MAX_BITS = 128  # past half of the bits, any two photos would be "alike"
MIN_DETAIL = 128  # of 255 frequencies: a flat image has none, a gradient 8–16, a photo 150–250 (`indexer.phash`)
TILE = 256  # rows × columns compared at once: 512 KB of xor'ed hashes, in cache (2048 cost a third more CPU)


@dataclass(frozen=True)
class Limits:
    bits: int = DEFAULT_BITS  # the 256-bit hashes of a pair differ in at most this many bits
    cosine: float = 0.85  # and, with a real CLIP model, their embeddings are at least this alike
    similar: float = 0.92  # "similar shots": CLIP embeddings at least this alike (not a copy)
    detail: int = MIN_DETAIL  # both hashes carry at least this much detail (below: byte-identical copies only)

    @property
    def short_bits(self) -> int:
        """The candidates' limit on the 64-bit hash: a quarter of the long one's plus slack, at most 20 (a 5% crop
        moves up to ~12 of 64 bits; two random hashes are within 18 bits once in ~4,000 pairs, within 20 once in
        ~600: past that, a large library's candidates would not fit in memory)."""
        return min(20, self.bits // 4 + 2)


def candidate_pairs(short: NDArray[np.uint64], limit: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(i, j), i < j, of every pair whose 64-bit hashes differ in at most `limit` bits. The tiles run on as many
    threads as there are cores (numpy releases the GIL)."""
    n = len(short)
    starts = range(0, n, TILE)
    with ThreadPoolExecutor(max(1, min(len(starts), os.cpu_count() or 1)), thread_name_prefix="pixdex-dup") as pool:
        found = list(pool.map(lambda start: _tile_row(short, start, limit), starts))
    if not found:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    return np.concatenate([i for i, _ in found]), np.concatenate([j for _, j in found])


def _tile_row(short: NDArray[np.uint64], start: int, limit: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The pairs of one row of tiles: rows start…start+TILE against every later column."""
    block = short[start:start + TILE, None]
    rows: list[NDArray[np.intp]] = []
    cols: list[NDArray[np.intp]] = []
    for col in range(start, len(short), TILE):
        i, j = np.nonzero(np.bitwise_count(block ^ short[None, col:col + TILE]) <= limit)
        i, j = i + start, j + col
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    return np.concatenate(rows), np.concatenate(cols)


def long_distances(long: NDArray[np.uint64], i: NDArray[np.intp], j: NDArray[np.intp]) -> NDArray[np.int64]:
    """Bits in which the 256-bit hashes of each pair (i, j) differ."""
    return np.asarray(np.bitwise_count(long[i] ^ long[j]).sum(axis=1, dtype=np.int64), dtype=np.int64)


def unpack(hashes: list[bytes]) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """The stored hashes as arrays: the 64-bit ones (n,) and the 256-bit ones (n, 4)."""
    raw = np.frombuffer(b"".join(hashes), dtype=">u8").reshape(len(hashes), (SHORT_BYTES + LONG_BYTES) // 8)
    native = raw.astype(np.uint64)
    return native[:, 0].copy(), native[:, 1:].copy()


def components(n: int, i: NDArray[np.intp], j: NDArray[np.intp]) -> list[list[int]]:
    """The groups (two or more) that the pairs (i, j) join, each as indices in ascending order."""
    if not len(i):
        return []
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _count, labels = connected_components(graph, directed=False)
    members: dict[int, list[int]] = defaultdict(list)
    for index in np.unique(np.concatenate([i, j])):
        members[int(labels[index])].append(int(index))
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: m[0])


def cosines(vectors: dict[int, NDArray[np.float32]], a: list[int], b: list[int]) -> NDArray[np.float32]:
    """Cosine similarity of each pair of ids (1.0 where either has no embedding: nothing to refute the hash)."""
    out = np.ones(len(a), dtype=np.float32)
    for n, (x, y) in enumerate(zip(a, b, strict=True)):
        if x in vectors and y in vectors:
            out[n] = float(vectors[x] @ vectors[y])
    return out


def find(catalog: Catalog, allowed: set[int] | None, limits: Limits, real_model: str | None,
         similar: bool = False) -> dict[str, Any]:
    """The duplicate groups among the images in `allowed` (None: all); `real_model`: the live CLIP model when it is
    a real one (its embeddings confirm each pair and find similar shots), else None."""
    # Counted before the hashes are read: a hash stored in between makes the note say too much, never too little.
    unhashed = catalog.unhashed_count(allowed)  # of what the caller asked about (and may see) only
    stored = catalog.phashes(allowed)
    detailed = [(i, p.bits) for i, p in stored if p.detail >= limits.detail]
    ids = [i for i, _ in detailed]
    short, long = unpack([h for _, h in detailed])
    i, j = candidate_pairs(short, limits.short_bits)
    bits = long_distances(long, i, j)
    keep = bits <= limits.bits
    i, j, bits = i[keep], j[keep], bits[keep]
    vectors = _vectors(catalog, real_model, {ids[n] for n in np.concatenate([i, j])} if real_model else set())
    if vectors:
        alike = cosines(vectors, [ids[n] for n in i], [ids[n] for n in j]) >= limits.cosine
        i, j = i[alike], j[alike]
    pairs = [(ids[a], ids[b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)]
    pairs += _same_content(catalog, allowed)
    groups = _groups(catalog, pairs, dict(detailed), limits.bits)
    notes = []
    if unhashed:
        notes.append(f"{unhashed} image(s) are not hashed yet (indexed before pixdex hashed images; the daemon or "
                     "`pixdex index` hashes them): they are left out")
    if len(detailed) < len(stored):
        notes.append(f"{len(stored) - len(detailed)} image(s) have too little detail to tell apart (flat, a smooth "
                     "gradient): only their byte-identical copies are grouped")
    result: dict[str, Any] = {"groups": groups, "notes": notes, "compared": len(stored)}
    if similar:
        result["similar"] = _similar_shots(catalog, real_model, allowed, limits, groups, notes)
    return result


def _vectors(catalog: Catalog, model: str | None, ids: set[int]) -> dict[int, NDArray[np.float32]]:
    if model is None or not ids:
        return {}
    return {i: v / max(float(np.linalg.norm(v)), 1e-12) for i, v in catalog.embeddings(model, ids)}


def _same_content(catalog: Catalog, allowed: set[int] | None) -> list[tuple[int, int]]:
    """Pairs of byte-identical files (the same content hash), hashed perceptually or not."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for image_id, digest in catalog.db.execute(
            "SELECT id, hash FROM images WHERE state = 'done' AND hash IN "
            "(SELECT hash FROM images WHERE state = 'done' AND hash IS NOT NULL GROUP BY hash HAVING count(*) > 1)"):
        if allowed is None or image_id in allowed:
            by_hash[digest].append(int(image_id))
    return [(ids[0], other) for ids in by_hash.values() for other in ids[1:]]


def _groups(catalog: Catalog, pairs: list[tuple[int, int]], hashes: dict[int, bytes],
            bits: int) -> list[dict[str, Any]]:
    index = {image_id: n for n, image_id in enumerate(dict.fromkeys(x for pair in pairs for x in pair))}
    ids = list(index)
    a = np.array([index[x] for x, _ in pairs], dtype=np.intp)
    b = np.array([index[y] for _, y in pairs], dtype=np.intp)
    out: list[dict[str, Any]] = []
    for members in components(len(ids), a, b):
        rows = [r for r in (catalog.get(ids[m]) for m in members) if r is not None]
        for keeper, why, near in _around_keepers(rows, hashes, bits):
            near.sort(key=lambda r: (r.id != keeper.id, r.path))
            out.append({"items": [_item(r, hashes, keeper) for r in near], "keeper": keeper.id, "why": why})
    out.sort(key=lambda g: g["items"][0]["path"])
    return out


def _around_keepers(rows: list[ImageRow], hashes: dict[int, bytes],
                    bits: int) -> list[tuple[ImageRow, str, list[ImageRow]]]:
    """A chain of close pairs (A near B near C …) can join images that are not alike at all (found by a trial: six
    different text pages, 90 bits apart at the ends). So a group is its keeper and the images within `bits` of the
    keeper itself (or of its very content); the rest form groups of their own, around their own keepers."""
    groups = []
    pending = rows
    while len(pending) >= 2:
        keeper, why = choose(pending)
        mine = hashes.get(keeper.id)
        near = [r for r in pending if r.id == keeper.id or (r.hash is not None and r.hash == keeper.hash)
                or (mine is not None and (theirs := hashes.get(r.id)) is not None and distance(mine, theirs) <= bits)]
        if len(near) >= 2:
            groups.append((keeper, why, near))
        pending = [r for r in pending if r not in near]
    return groups


def _item(row: ImageRow, hashes: dict[int, bytes], keeper: ImageRow) -> dict[str, Any]:
    mine, theirs = hashes.get(row.id), hashes.get(keeper.id)
    return {"id": row.id, "path": display_path(row.path), "width": row.width, "height": row.height, "size": row.size,
            "taken": row.taken, "mtime_ns": row.mtime_ns,
            "format": os.path.splitext(os.fsdecode(row.path))[1].lstrip(".").upper(),
            "rating": row.fact_dict.get("rating"), "label": row.fact_dict.get("label"),
            "distance": distance(mine, theirs) if mine and theirs else None}


def _similar_shots(catalog: Catalog, model: str | None, allowed: set[int] | None, limits: Limits,
                   groups: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """Groups of images whose CLIP embeddings are at least `limits.similar` alike, copies left out (each group's
    keeper stands for it). Only with a real model: a stand-in's embeddings say nothing."""
    if model is None:
        notes.append("similar shots need a real CLIP model (the one installed is a stand-in, or none): not looked for")
        return []
    copies = {item["id"] for g in groups for item in g["items"] if item["id"] != g["keeper"]}
    found = [(i, v) for i, v in catalog.embeddings(model, allowed) if i not in copies]
    if len(found) < 2:
        return []
    ids = [i for i, _ in found]
    matrix = np.stack([v / max(float(np.linalg.norm(v)), 1e-12) for _, v in found]).astype(np.float32)
    rows: list[NDArray[np.intp]] = []
    cols: list[NDArray[np.intp]] = []
    for start in range(0, len(ids), TILE):
        i, j = np.nonzero(matrix[start:start + TILE] @ matrix.T >= limits.similar)
        keep = i + start < j
        rows.append(i[keep] + start)
        cols.append(j[keep])
    out = []
    for members in components(len(ids), np.concatenate(rows), np.concatenate(cols)):
        picked = [r for r in (catalog.get(ids[m]) for m in members) if r is not None]
        out.append({"items": [_item(r, {}, r) for r in sorted(picked, key=lambda r: r.path)]})
    return out


def ids_of(groups: Iterable[dict[str, Any]]) -> list[list[int]]:
    """Each group's ids (for tests and the CLI's plain output)."""
    return [[item["id"] for item in g["items"]] for g in groups]




def duplicates(service: SearchService, raw_filters: str = "", limits: Limits | None = None, similar: bool = False,
               cwd: Path | None = None, scope: tuple[str, ...] | None = None) -> dict[str, Any]:
    """`pixdex duplicates` and GET /duplicates: the groups among the images `raw_filters` (filters only: in:NAME,
    folder:, after:…) and `scope` (a limited token's folders) let through."""
    parsed = parse_query(raw_filters, cwd)
    if parsed.has_text:
        raise QueryError(f"{raw_filters!r}: duplicates takes filters only (such as in:NAME, folder:~/Pictures, "
                         f"after:2020); these words are not filters: {parsed.text}")
    reader = service.reader
    if not reader.exists():
        return {"groups": [], "notes": [f"nothing is indexed in {reader.layout.root} yet; run `pixdex index`"],
                "compared": 0}
    allowed: set[int] | None = None
    filters = service.resolve(parsed.filters, scope)
    if not filters.empty:
        text = reader.text()
        allowed = (matching_ids(text, filters) or set()) if text is not None else set()
    catalog = reader.catalog()
    return find(catalog, allowed, limits or Limits(), real_model(service.config, catalog.live_model()), similar)


def real_model(config: Config, live: str | None) -> str | None:
    """The live CLIP model when it is a real one (its files present and not a stand-in), else None."""
    if live is None:
        return None
    folder = config.model_dir / "clip" / live.rsplit("@", 1)[0]
    return live if folder.is_dir() and not (folder / STANDIN_MARKER).exists() else None
