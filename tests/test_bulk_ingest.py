"""Storing many images at once (`writer.bulk`) gives the catalog and the indexes exactly what storing them one by
one gives; catalogs from before half-precision embeddings migrate; the WAL stays bounded during a large build."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.phashes import Phash
from pixdex.indexer.catalog.rows import FileStat
from pixdex.indexer.catalog.schema import MIGRATIONS, SCHEMA_VERSION
from pixdex.indexer.fulltext import FullText
from pixdex.indexer.layout import Layout
from pixdex.indexer.sections import IndexSettings, PipelineSettings
from pixdex.indexer.sidecars.state import SidecarState
from pixdex.indexer.vectors import VectorIndex
from pixdex.indexer.writer import Writer
from pixdex.indexer.writer.commands import Indexed
from pixdex.query.parse import Filters
from pixdex.query.reader import Reader
from pixdex.query.text import text_hits

MODELS = ("clip@1", "tagger@1")
NDIM = 8
WORDS = ["harbour", "sunset", "cat", "bicycle", "mountain", "lantern", "orchid", "tram"]


def queued(writer: Writer) -> dict[bytes, tuple[int, int]]:
    """(id, seq) of every queued file, by path (read as the pipeline's feed reads it)."""
    reader = Catalog(writer.catalog.path, read_only=True)
    try:
        return {e.row.path: (e.row.id, e.seq) for e in reader.queued(10_000)}
    finally:
        reader.close()


def open_writer(root: Path, ids: dict[bytes, int]) -> Writer:
    layout = Layout(root)
    return Writer(Catalog(layout.catalog), FullText(layout), VectorIndex(layout, MODELS[0], NDIM, IndexSettings()),
                  PipelineSettings(commit_seconds=0.05), MODELS, ids=ids)


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(NDIM).astype(np.float32)
    return v / np.linalg.norm(v)


def path(n: int) -> bytes:
    return f"/photos/{2000 + n % 3}/trip {n % 4}/IMG_{n:04d}.jpg".encode()


def stat(n: int, version: int = 0) -> FileStat:
    return FileStat(path(n), 2049, 5000 + n, 1000 + n + version, 1_600_000_000_000_000_000 + n + version)


def item(image_id: int, seq: int, n: int, rng: np.random.Generator, version: int = 0,
         sidecar_id: int | None = None, models: tuple[str, str] | None = None) -> Indexed:
    """One image's results: model tags, its own metadata (keywords, rating, a place, GPS for some), a sidecar for
    some (with a person's keywords and a rejection), a perceptual hash for some, for some the text an OCR model read
    in this content before (a rebuild takes it from the sidecar)."""
    words = [WORDS[(n + k) % len(WORDS)] for k in range(3)]
    side = None
    if n % 3 == 0:
        side = SidecarState(stat(n).path + b".xmp", f"7:{n}:1:100644", True,
                            person=[{"name": f"person{n % 5}", "path": f"people|person{n % 5}"}],
                            rejected=[words[0]], text=f"sidecar text {words[2]}", rating=n % 6,
                            description=f"a {words[1]}", digest=f"{n:08x}",
                            location={"city": "Lisbon"} if n % 2 else {})
    embedded: dict[str, Any] = {"keywords": [f"own{n % 7}"], "title": f"title {words[1]}", "rating": n % 5}
    if n % 4 == 1:
        embedded |= {"lat": 38.7 + n / 1000, "lon": -9.1, "city": "Porto"}
    return Indexed(image_id=image_id, seq=seq, stat=stat(n, version), digest=f"{n:04x}-{version}", width=4000 + n,
                   height=3000, taken=datetime(2001 + n % 20, 1 + n % 12, 1 + n % 28) if n % 5 else None,
                   camera="Canon EOS R6" if n % 2 else None,
                   tags=[{"name": w, "confidence": 0.5, "category": "general"} for w in words],
                   embedding=unit(rng) if n % 11 else None, embedded=embedded, side=side,
                   facts={"iso": 100 * (1 + n % 8)}, sidecar_id=sidecar_id,
                   phash=Phash(bytes([n % 256]) * 40, n % 256) if n % 2 else None, models=models,
                   ocr=("ocr@1", f"read before {words[0]}" if n % 2 else "") if n % 5 in (1, 2) else None)


def build(root: Path, bulk: bool) -> Writer:
    """The same history twice: 60 new files (some taking their sidecar's id), then a deletion, text read and a
    description, then half of them stored again (new content for some, the same for others; by the live model
    or a new one)."""
    rng = np.random.default_rng(3)
    ids = {path(n): 1000 + n for n in range(60) if n % 6}  # a rebuild's ids for most; the others take the sidecar's
    writer = open_writer(root, ids)
    store = writer.store if bulk else writer.store_each
    writer.register([stat(n) for n in range(60)], [], [], [], []).result()
    writer.flush()
    waiting = queued(writer)
    first = [item(*waiting[path(n)], n, rng, sidecar_id=500 + n if n % 6 == 0 else None) for n in range(60)]
    gone = writer.catalog.get_many([waiting[path(59)][0]])[waiting[path(59)][0]]
    writer.register([], [], [], [], [gone]).result()  # deleted before its results arrive
    store(first).result()
    writer.flush()
    rows = {r.path: r for r in writer.catalog.all_rows()}
    for n in (1, 2, 7):
        row = rows[path(n)]
        writer.text_read(row.id, "ocr@1", {"text": f"shop sign {WORDS[n % 8]}", "lines": 1}, None, None, row.hash)
    for n in (2, 4):
        row = rows[path(n)]
        writer.described(row.id, "llm@1", {"description": "a quiet tram stop", "keywords": ["tram", "stop"]},
                         None, None, row.hash)
    writer.flush()
    again = []
    writer.enqueue([rows[path(n)].id for n in range(0, 40, 2)], 1, "asked for").result()
    writer.flush()
    seqs = dict(queued(writer).values())
    for n in range(0, 40, 2):
        row = rows[path(n)]
        version = 1 if n % 4 == 0 else 0  # new content, or the same content stored again
        switching = ("clip@2", "tagger@1") if n % 8 < 4 else None  # a new model's vectors beside the live one's
        again.append(item(row.id, seqs[row.id], n, rng, version, models=switching))
    store(again).result()
    writer.flush()
    return writer


def snapshot(writer: Writer) -> dict[str, Any]:
    db = writer.catalog.db
    rows = db.execute("SELECT * FROM images ORDER BY id").fetchall()
    columns = [d[0] for d in db.execute("SELECT * FROM images").description]
    volatile = {columns.index("created"), columns.index("updated")}
    return {"images": [tuple(v for k, v in enumerate(r) if k not in volatile) for r in rows],
            "embeddings": db.execute("SELECT image_id, model, vector FROM embeddings ORDER BY image_id").fetchall(),
            "phashes": db.execute("SELECT * FROM phashes ORDER BY image_id").fetchall(),
            "queue": db.execute("SELECT image_id, priority, reason, seq FROM queue ORDER BY image_id").fetchall(),
            "tombstones": db.execute("SELECT * FROM tombstones ORDER BY image_id").fetchall(),
            "meta": db.execute("SELECT * FROM meta ORDER BY key").fetchall()}


def searches(root: Path) -> list[Any]:
    reader = Reader(Layout(root), IndexSettings())
    text = reader.text()
    assert text is not None
    found: list[Any] = [text_hits(text, w, Filters(), 100) for w in [*WORDS, "person1", "lisbon", "sign", "quiet"]]
    found.append(text_hits(text, "cat", Filters(tags=("mountain",)), 100))
    found.append(text_hits(text, "sunset", Filters(after=datetime(2005, 1, 1)), 100))
    rng = np.random.default_rng(9)
    view = reader.vectors(MODELS[0], NDIM)
    found += [view.search(unit(rng), 10) for _ in range(5)]
    reader.close()
    return found


def test_bulk_store_writes_what_storing_one_by_one_writes(tmp_path: Path) -> None:
    each, bulk = build(tmp_path / "each", bulk=False), build(tmp_path / "bulk", bulk=True)
    one, many = snapshot(each), snapshot(bulk)
    assert len(one["images"]) == 59 and len(one["embeddings"]) > 40 and one["tombstones"]
    assert {r[0] for r in one["images"]} >= {500, 506, 512}  # rows that took their sidecar's id
    for table in one:
        assert many[table] == one[table], table
    for writer in (each, bulk):
        writer.close()
        writer.catalog.close()
    assert searches(tmp_path / "bulk") == searches(tmp_path / "each")
    assert all(searches(tmp_path / "bulk")[:4])


def test_a_catalog_at_version_9_migrates_to_half_precision(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(layout.catalog, isolation_level=None)
    for number, step in enumerate(MIGRATIONS[:9]):
        db.executescript(f"BEGIN; {step}; PRAGMA user_version = {number + 1}; COMMIT;")
    rng = np.random.default_rng(1)
    vectors = {n: unit(rng) for n in range(1, 6)}
    for n, vector in vectors.items():
        db.execute("INSERT INTO images (id, path, dev, ino, size, mtime_ns, hash, state, clip_model, created, updated, "
                   "gen) VALUES (?, ?, 1, ?, 1, 1, 'h', 'done', ?, 0, 0, 2)", (n, path(n), n, MODELS[0]))
        db.execute("INSERT INTO embeddings VALUES (?, ?, ?)", (n, MODELS[0], vector.astype("<f4").tobytes()))
    db.execute("UPDATE meta SET value = 2 WHERE key = 'generation'")
    db.close()
    assert SCHEMA_VERSION >= 10

    catalog = Catalog(layout.catalog)
    assert catalog.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert catalog.embedding_dim(MODELS[0]) == NDIM
    stored = dict(catalog.embeddings(MODELS[0]))
    assert {len(v) for (v,) in catalog.db.execute("SELECT vector FROM embeddings")} == {2 * NDIM}
    for n, vector in vectors.items():
        assert stored[n].dtype == np.float32
        np.testing.assert_allclose(stored[n], vector, atol=1e-3)
    writer = Writer(catalog, FullText(layout), VectorIndex(layout, MODELS[0], NDIM, IndexSettings()),
                    PipelineSettings(), MODELS)
    writer.close()
    catalog.close()
    reader = Reader(layout, IndexSettings())
    for n, vector in vectors.items():  # the migrated vectors are found, each as its own nearest
        assert reader.vectors(MODELS[0], NDIM).search(vector, 1)[0][0] == n


@pytest.mark.parametrize("limit", [256 << 10, None])
def test_the_wal_stays_bounded_during_a_large_build(tmp_path: Path, limit: int | None) -> None:
    """Commits of 400 images each: with a limit of 256 KB the WAL is truncated whenever a commit leaves it
    larger; without one (the control) it grows past several limits."""
    writer = open_writer(tmp_path, {})
    writer.catalog.wal_limit = limit or 1 << 40
    rng = np.random.default_rng(0)
    wal = Path(f"{writer.catalog.path}-wal")
    sizes = []
    for chunk in range(6):
        numbers = range(chunk * 400, (chunk + 1) * 400)
        writer.register([stat(n) for n in numbers], [], [], [], []).result()
        writer.flush()
        waiting = queued(writer)
        writer.store([item(*waiting[path(n)], n, rng) for n in numbers]).result()
        writer.flush()
        sizes.append(wal.stat().st_size)
    writer.close()
    writer.catalog.close()
    if limit is not None:
        assert max(sizes) <= limit, sizes
    else:
        assert max(sizes) > 4 * (256 << 10), sizes
