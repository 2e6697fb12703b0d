"""A checker that catalog, vector file, text index, sidecars and the files on disk agree.

Used after kill -9 trials: everything on disk is indexed with its current content, every index
holds exactly the ids the catalog calls done, nothing is queued, no temp file remains.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import tantivy
from usearch.index import Index

from pixdex.indexer.fulltext import _schema, open_for_reading
from pixdex.indexer.layout import Layout
from pixdex.indexer.scan.walk import is_image_name
from pixdex.indexer.sidecars.naming import sidecar_path
from pixdex.indexer.sidecars.read import read_sidecar


def disk_images(root: Path) -> dict[bytes, str]:
    """Path → content hash of every image under `root` (what the catalog must hold)."""
    found = {}
    for directory, _dirs, files in os.walk(os.fsencode(root)):
        for name in files:
            if name.startswith(b".") or not is_image_name(name):
                continue
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                found[path] = hashlib.blake2b(handle.read(), digest_size=16).hexdigest()
    return found


def temp_files(*roots: Path) -> list[str]:
    left = []
    for root in roots:
        for directory, _dirs, files in os.walk(root):
            left += [os.path.join(directory, f) for f in files if f.startswith(".pixdex-tmp-") or f.endswith(".tmp")]
    return left


def check_consistent(data: Path, pics: Path) -> dict[bytes, int]:
    """Assert that every store agrees with the disk; returns path → id."""
    db = sqlite3.connect(data / "catalog.sqlite3")
    rows = {r[0]: r[1:] for r in db.execute("SELECT path, id, state, hash, tags, gen FROM images")}
    # what stayed queued, to find why (seen after a kill -9 trial in a whole-suite run, 2026-12-03)
    queued = db.execute("SELECT q.image_id, q.priority, q.reason, q.seq, i.path, i.state, i.hash IS NULL "
                        "FROM queue q LEFT JOIN images i ON i.id = q.image_id").fetchall()
    embedded = {i for (i,) in db.execute("SELECT image_id FROM embeddings")}
    models = {m for (m,) in db.execute("SELECT DISTINCT model FROM embeddings")}
    live = db.execute("SELECT model FROM live WHERE what = 'clip'").fetchone()
    generation = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
    db.close()

    disk = disk_images(pics)
    assert set(rows) == set(disk), (set(rows) ^ set(disk))
    assert queued == [], queued
    stale = [p for p, (_, state, digest, _, _) in rows.items() if state != "done" or digest != disk[p]]
    assert not stale, f"not indexed with their current content: {stale[:5]}"
    done = {image_id for image_id, *_ in rows.values()}
    assert embedded == done

    manifest = json.loads((data / "vectors" / "vectors.json").read_text())
    assert manifest["generation"] == generation
    if done:  # one model: the live one, whose vectors the file holds; nothing left of a switch
        assert live is not None and models == {live[0]} == {manifest["model"]}, (models, live, manifest["model"])
        assert not (data / "vectors" / "next").exists()
    vectors = Index.restore(str(data / "vectors" / "vectors.usearch"))
    keys = {int(k) for k in vectors.keys} if len(vectors) else set()
    assert keys == done, f"vector file: {len(keys - done)} extra, {len(done - keys)} missing"

    text = open_for_reading(Layout(data))
    assert text is not None
    searcher = text.searcher()
    result = searcher.search(tantivy.Query.all_query(), len(done) + 10)
    docs = [searcher.doc(address) for _, address in result.hits]
    by_id = {int(d["id"][0]): d["path"][0] for d in docs}
    assert len(docs) == len(by_id), "duplicate text documents"
    assert set(by_id) == done, f"text index: {len(set(by_id) - done)} extra, {len(done - set(by_id))} missing"
    for path, (image_id, *_rest) in rows.items():
        assert by_id[image_id] == os.fsdecode(path)
    assert searcher.search(tantivy.Query.term_query(_schema(), "id", 0), 1).hits == []

    for path, (_, _, _, tags, _) in rows.items():
        machine = [t["name"] for t in json.loads(tags) if t.get("category") != "person"]
        person = [t["name"] for t in json.loads(tags) if t.get("category") == "person"]
        if machine or person:
            xmp = read_sidecar(sidecar_path(Path(os.fsdecode(path))))
            listed = xmp.get("Xmp.digiKam.TagsList", [])
            in_sidecar = sorted(t for t in listed if t.startswith("pixdex/"))
            assert in_sidecar == sorted(f"pixdex/{n}" for n in machine), (path, in_sidecar, machine, xmp)
            assert set(person) <= {t.split("/")[-1] for t in listed}, path
    assert temp_files(pics, data) == []
    return {p: r[0] for p, r in rows.items()}
