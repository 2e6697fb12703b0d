"""Costs of the indexing core at 100k items: one commit, query latency, CLI start-up, model memory.

    .venv/bin/python bench/core_bench.py [--items 100000] [--reps 20] [--clip-arch ViT-B-32]

One command measures, within one run:

1. one commit of 1 new item into a 100k-item library, now (`Writer.store` + `flush`: SQLite commit,
   then tantivy and the in-memory usearch index catch up; the usearch file is saved only every
   `index.save_changes` vectors or `index.save_seconds`) and before (commit 73c4fd3: tantivy commit +
   a rewrite of the whole usearch file + SQLite commit per `Writer.commit`). The old code is
   measured for real: `git archive 73c4fd3` is unpacked in /tmp and installed in its own venv (same
   numpy/usearch/tantivy versions as .venv, via a constraints file from `pip freeze`), and this same
   file runs there with `--old-driver`;
2. query latency p50/p99 with one `Reader` open for the whole run: text (`text_hits`), vector
   (`VectorView.search`), both also on the old code; vector latency when the saved file is behind by
   0, 1k, 2k and 5k committed vectors (new or re-embedded items) or 5k files a scan registered;
   hybrid through `SearchService` on a second library of 32-d vectors, because the query-time text
   tower is the stand-in CLIP model (32-d);
3. `pixdex search` / `pixdex status` start-up: wall time and peak RSS of the installed command over a
   small indexed folder, and what `pixdex status` imports (`python -X importtime`);
4. RSS of loaded ONNX sessions (a random-weight, real-size CLIP exported by the real exporter, or
   the tiny stand-in with ``--clip-arch ''``) and after the model cache's TTL unloaded them.

The libraries are synthetic (no images): paths, 8 tags and a short caption drawn from a Zipf
distribution over 5,000 made-up words, and random unit float32 vectors, all from fixed seeds, fed
through each version's real `Writer`. Figures go to docs/BENCHMARKS.md (its "core" section) and
bench/out/core_bench.json (``--from-json`` writes the page again from it). The old version's venv
stays in /tmp for the next run. No timing assertions anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
OLD_REV = "73c4fd3"
OLD_SRC = Path("/tmp/pixdex-old")
OLD_VENV = Path("/tmp/pixdex-oldvenv")
MODEL_ID = "bench-random-512"
NDIM = 512
CHUNK = 20_000
DELTAS = (1000, 2000, 5000)  # committed-but-unsaved vectors a reader searches exactly beside the saved file
SEED = 7
CITIES = ((48.85, 2.35), (38.72, -9.14), (35.68, 139.69), (-33.92, 18.42), (40.71, -74.0))
CAMERAS = ("Canon EOS R6", "Nikon Z6", "Sony ILCE-7M3", "Fujifilm X-T4", "Google Pixel 7", "Apple iPhone 14 Pro")


# Synthetic library: numpy and the standard library only, so both versions build the same one ---------------


def vocabulary(size: int = 5000, seed: int = 1) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(syllables, int(rng.integers(2, 4))))] = None
    return list(words)


def zipf_weights(size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1)
    return weights / weights.sum()


def unit_vectors(rng: np.random.Generator, count: int, ndim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, ndim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synth_batch(seed: int, start: int, count: int, ndim: int,
                vocab: list[str]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Items start … start+count-1: the fields of one catalog row each, and their vectors."""
    rng = np.random.default_rng([seed, start])
    words = rng.choice(len(vocab), (count, 13), p=zipf_weights(len(vocab)))
    items = []
    for j in range(count):
        i = start + j
        w = [vocab[k] for k in words[j]]
        folder = f"{vocab[(i // 100 * 7919) % len(vocab)]}-{vocab[(i // 100 * 104729) % len(vocab)]}"
        items.append({
            "path": f"/photos/{2000 + (i // 4000) % 25}/{folder}/IMG_{i:07d}.jpg".encode(),
            "ino": 1_000_000 + i, "size": 2_000_000 + (i * 37) % 1_000_000,
            "mtime_ns": 1_600_000_000_000_000_000 + i * 1_000_000_000, "digest": f"{i:016x}",
            "taken": datetime(2000 + (i // 4000) % 25, 1 + i % 12, 1 + i % 28, 12, i % 60),
            "camera": CAMERAS[i % len(CAMERAS)],
            "tags": [{"name": t, "confidence": 0.5, "category": "general"} for t in dict.fromkeys(w[:8])],
            "metadata": " ".join(w[8:]),
            "rating": i % 6,  # rating:
            # near: 30% carry a position, around one of five places (a few km of spread)
            "position": (CITIES[i % 5][0] + (i % 97) / 1000, CITIES[i % 5][1] + (i % 89) / 1000) if i % 10 < 3
            else None,
        })
    return items, unit_vectors(rng, count, ndim)


def query_words(count: int, vocab: list[str], seed: int = 11) -> list[str]:
    """1–3 words per query, drawn from the library's own word frequencies."""
    rng = np.random.default_rng(seed)
    p = zipf_weights(len(vocab))
    return [" ".join(vocab[k] for k in rng.choice(len(vocab), int(rng.integers(1, 4)), p=p)) for _ in range(count)]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "min": float(ms.min()), "max": float(ms.max())}


def timed(fn: Any, inputs: list[Any], warmup: int = 10) -> dict[str, float]:
    for value in inputs[:warmup]:
        fn(value)
    out = []
    for value in inputs:
        t0 = time.perf_counter()
        fn(value)
        out.append(time.perf_counter() - t0)
    return percentiles(out)


def cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU-seconds of this process and of the children it waited for."""
    import resource

    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def others_cpu() -> float:
    """CPU-seconds the machine spent on other processes so far; the difference over a run shows a disturbed run."""
    return cpu_seconds() - own_cpu()


@contextmanager
def watch(disturbed: dict[str, float], part: str) -> Iterator[None]:
    start = others_cpu()
    yield
    disturbed[part] = max(0.0, others_cpu() - start)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("numpy", "usearch", "tantivy")}


# 1 (before). The design at 73c4fd3, run inside the old venv -------------------------------------------------


def old_driver(root: Path, items: int, reps: int, queries: int) -> dict[str, Any]:
    """Build the library through the old Writer, then time add+commit of one new item, and queries."""
    from pixdex.daemon.config import IndexSettings
    from pixdex.indexer import writer as old
    from pixdex.indexer.catalog import FileStat
    from pixdex.indexer.fulltext import FullText
    from pixdex.indexer.vectors import VectorIndex
    from pixdex.query.parse import Filters
    from pixdex.query.text import text_hits

    assert str(OLD_VENV) in old.__file__, old.__file__  # the old code, not the editable checkout
    vocab = vocabulary()
    shutil.rmtree(root, ignore_errors=True)
    stores = old.open_stores(root, MODEL_ID, NDIM, IndexSettings())
    writer = old.Writer(stores, MODEL_ID, None)

    def add(batch: list[dict[str, Any]], vectors: np.ndarray) -> tuple[float, float]:
        t0 = time.perf_counter()
        stats = [FileStat(b["path"], 2049, b["ino"], b["size"], b["mtime_ns"]) for b in batch]
        ids = [writer.add_pending(st) for st in stats]
        writer.commit()
        t1 = time.perf_counter()
        writer.store([old.Indexed(image_id=i, stat=st, digest=b["digest"], width=4000, height=3000,
                                  taken=b["taken"], camera=b["camera"], tags=b["tags"], embedding=v,
                                  metadata=b["metadata"])
                       for i, st, b, v in zip(ids, stats, batch, vectors, strict=True)])
        writer.commit()
        return t1 - t0, time.perf_counter() - t1

    t0 = time.perf_counter()
    for start in range(0, items, CHUNK):
        add(*synth_batch(SEED, start, min(CHUNK, items - start), NDIM, vocab))
    build = time.perf_counter() - t0
    register, store = [], []
    for r in range(reps):
        a, b = add(*synth_batch(SEED, 10_000_000 + r, 1, NDIM, vocab))
        register.append(a)
        store.append(b)
    # A search opened the stores afresh (the CLI did); measured here on stores opened once.
    fulltext = FullText(root / "fulltext")
    vectors = VectorIndex(root / "vectors", MODEL_ID, NDIM, IndexSettings(), read_only=True)
    words = query_words(queries * 3, vocab)
    qvecs = list(unit_vectors(np.random.default_rng(13), queries, NDIM))
    return {
        "versions": versions(), "build_s": build, "commit": percentiles(store), "commit_ms": [s * 1000 for s in store],
        "register": percentiles(register),
        "text": timed(lambda w: text_hits(fulltext, w, Filters(), 200), words),
        "vector": timed(lambda q: vectors.search(q, 200), qvecs),
        "vector_file_bytes": (root / "vectors" / "vectors.usearch").stat().st_size,
    }


def old_python() -> Path:
    """The old version's interpreter: unpacked from git and installed once, reused while its marker matches."""
    python = OLD_VENV / "bin" / "python"
    marker = OLD_VENV / "pixdex-rev"
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", OLD_REV], capture_output=True, text=True,
                         check=True).stdout.strip()
    if python.exists() and marker.exists() and marker.read_text() == rev:
        return python
    log(f"installing {OLD_REV} into {OLD_VENV} (once)")
    shutil.rmtree(OLD_SRC, ignore_errors=True)
    shutil.rmtree(OLD_VENV, ignore_errors=True)
    OLD_SRC.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(OLD_SRC)], input=archive, check=True)
    constraints = OLD_VENV.with_name("pixdex-old-constraints.txt")
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout
    constraints.write_text("\n".join(line for line in freeze.splitlines() if not line.startswith("#")) + "\n")
    subprocess.run([sys._base_executable, "-m", "venv", str(OLD_VENV)], check=True)  # type: ignore[attr-defined]
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), "usearch<2.26.2",
                    str(OLD_SRC)], check=True)
    marker.write_text(rev)
    return python


# 1 and 2 (after). The current design, driven through its Writer and Reader ----------------------------------


def _embedded(b: dict[str, Any]) -> dict[str, Any]:
    """An item's own metadata: its caption, rating and position (as an image's reconciled XMP/EXIF)."""
    out: dict[str, Any] = {"description": b["metadata"]}
    if b.get("rating") is not None:
        out["rating"] = b["rating"]
    if b.get("position") is not None:
        out["lat"], out["lon"] = b["position"]
    return out


class Library:
    """A data directory fed through the real `Writer` (register → store → flush, as the pipeline does)."""

    def __init__(self, root: Path, model_id: str, ndim: int, index_settings: Any, vectors: bool = True) -> None:
        """Without `vectors`, the writer keeps no vector index (the embeddings are still stored in the catalog)."""
        from pixdex.indexer.catalog import Catalog
        from pixdex.indexer.layout import Layout

        self.with_vectors = vectors
        self.layout = Layout(root)
        self.model_id, self.ndim = model_id, ndim
        self.vocab = vocabulary()
        self.open(index_settings)
        self.lookup = Catalog(self.layout.catalog, read_only=True)

    def open(self, index_settings: Any) -> float:
        from pixdex.indexer.catalog import Catalog
        from pixdex.indexer.fulltext import FullText
        from pixdex.indexer.sections import PipelineSettings
        from pixdex.indexer.vectors import VectorIndex
        from pixdex.indexer.writer import Writer

        t0 = time.perf_counter()
        self.catalog = Catalog(self.layout.catalog)
        vectors = VectorIndex(self.layout, self.model_id, self.ndim, index_settings) if self.with_vectors else None
        self.writer = Writer(self.catalog, FullText(self.layout), vectors, PipelineSettings(), (self.model_id, None))
        return time.perf_counter() - t0

    def close(self) -> float:
        """Commit, save the vector file, stop; returns the seconds it took (mostly the save)."""
        t0 = time.perf_counter()
        self.writer.close()
        self.catalog.close()
        return time.perf_counter() - t0

    def register(self, batch: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Commit new files as pending and queued (as a scan does); returns their (id, queue seq)."""
        from pixdex.indexer.catalog.rows import FileStat

        stats = [FileStat(b["path"], 2049, b["ino"], b["size"], b["mtime_ns"]) for b in batch]
        self.writer.register(stats, [], [], [], [])
        self.writer.flush()
        found = {bytes(p): (int(i), int(s)) for i, p, s in self.lookup.db.execute(
            "SELECT i.id, i.path, q.seq FROM images i JOIN queue q ON q.image_id = i.id")}
        return [found[b["path"]] for b in batch]

    def indexed(self, keys: list[tuple[int, int]], batch: list[dict[str, Any]], vectors: np.ndarray) -> list[Any]:
        from pixdex.indexer.catalog.rows import FileStat
        from pixdex.indexer.writer.commands import Indexed

        return [Indexed(image_id=i, seq=s, stat=FileStat(b["path"], 2049, b["ino"], b["size"], b["mtime_ns"]),
                        digest=b["digest"], width=4000, height=3000, taken=b["taken"], camera=b["camera"],
                        tags=b["tags"], embedding=v, embedded=_embedded(b))
                for (i, s), b, v in zip(keys, batch, vectors, strict=False)]

    def store(self, items: list[Any]) -> int:
        future = self.writer.store(items)
        generation = self.writer.flush()
        future.result()
        return generation

    def add(self, seed: int, start: int, count: int) -> list[int]:
        ids: list[int] = []
        for first in range(start, start + count, CHUNK):
            batch, vectors = synth_batch(seed, first, min(CHUNK, start + count - first), self.ndim, self.vocab)
            keys = self.register(batch)
            self.store(self.indexed(keys, batch, vectors))
            ids += [i for i, _ in keys]
        return ids

    def rewrite(self, ids: list[int], seed: int) -> None:
        """Store new vectors for items already indexed (a re-embedding), in one commit."""
        rows = self.lookup.get_many(ids)
        vectors = unit_vectors(np.random.default_rng(seed), len(ids), self.ndim)
        batch = [{"path": rows[i].path, "ino": rows[i].ino, "size": rows[i].size, "mtime_ns": rows[i].mtime_ns,
                  "digest": rows[i].hash, "taken": None, "camera": rows[i].camera,
                  "tags": rows[i].tag_list, "metadata": rows[i].metadata} for i in ids]
        self.store(self.indexed([(i, 0) for i in ids], batch, vectors))


def measure_commits(lib: Library, reader: Any, reps: int, qvec: np.ndarray) -> dict[str, Any]:
    from pixdex.query.parse import Filters
    from pixdex.query.text import text_hits

    register, store, text_after, vector_after = [], [], [], []
    saves_before = lib.writer.vectors.saved_generation
    for r in range(reps):
        batch, vectors = synth_batch(SEED, 10_000_000 + r, 1, NDIM, lib.vocab)
        t0 = time.perf_counter()
        keys = lib.register(batch)
        t1 = time.perf_counter()
        items = lib.indexed(keys, batch, vectors)
        t2 = time.perf_counter()
        lib.store(items)
        t3 = time.perf_counter()
        register.append(t1 - t0)
        store.append(t3 - t2)
        # What a reader pays to see that commit: the first query after it.
        t4 = time.perf_counter()
        text_hits(reader.text(), batch[0]["tags"][0]["name"], Filters(), 200)
        t5 = time.perf_counter()
        with reader.vector_lock:
            reader.vectors(MODEL_ID, NDIM).search(qvec, 200)
        t6 = time.perf_counter()
        text_after.append(t5 - t4)
        vector_after.append(t6 - t5)
    return {"commit": percentiles(store), "commit_ms": [s * 1000 for s in store], "register": percentiles(register),
            "text_after_commit": percentiles(text_after), "vector_after_commit": percentiles(vector_after),
            "file_saved_during_reps": lib.writer.vectors.saved_generation != saves_before}


def vector_search(reader: Any) -> Any:
    def run(q: np.ndarray) -> None:
        with reader.vector_lock:
            reader.vectors(MODEL_ID, NDIM).search(q, 200)
    return run


def first_vector_query(reader: Any, q: np.ndarray) -> float:
    t0 = time.perf_counter()
    vector_search(reader)(q)
    return (time.perf_counter() - t0) * 1000


def measure_deltas(lib: Library, reader: Any, qvecs: list[np.ndarray], keep: Any) -> dict[str, Any]:
    """Vector queries while the saved file is behind by 1k and 5k committed vectors: new items, re-embedded
    items; and by 5k files a scan registered (pending, no vector yet). The writer keeps the file unsaved
    (`keep`) until it closes, which saves it: the close time is the save that `save_changes` triggers."""
    out: dict[str, Any] = {}
    for kind in ("new", "updated", "registered"):
        lib.open(keep)
        existing = [int(i) for (i,) in lib.lookup.db.execute("SELECT id FROM images ORDER BY id LIMIT 5000")]
        done = 0
        for delta in DELTAS if kind != "registered" else (5000,):
            t0 = time.perf_counter()
            if kind == "new":
                lib.add(SEED + 1, 20_000_000 + done, delta - done)
            elif kind == "updated":
                lib.rewrite(existing[done:delta], seed=100 + delta)
            else:
                lib.register(synth_batch(SEED + 2, 30_000_000, delta, lib.ndim, lib.vocab)[0])
            commit = time.perf_counter() - t0
            refresh = first_vector_query(reader, qvecs[0])
            out[f"{kind} {delta}"] = {"latency": timed(vector_search(reader), qvecs), "first_query_ms": refresh,
                                      "commit_s": commit, "file_saved": lib.writer.vectors.unsaved == 0}
            done = delta
        out[f"{kind} 5000"]["parts"] = delta_parts(reader, qvecs[:100])
        out[f"save after {kind}"] = lib.close()
        log(f"delta {kind}: {json.dumps({k: v for k, v in out.items() if k.startswith(kind)})}")
    return out


def delta_parts(reader: Any, qvecs: list[np.ndarray]) -> dict[str, Any]:
    """Where a query's time goes with a delta: the HNSW search of the saved file at k = 200 and at the k the
    view asks for (200 + the file's entries it must skip), and the exact search over the delta's vectors
    (the matrix product alone)."""
    with reader.vector_lock:
        view = reader.vectors(MODEL_ID, NDIM)
    base = view.base
    skipped = getattr(view, "shadowed", None)  # the file's entries the view skips, where the view keeps them apart
    fetch = min(200 + len(view.stale if skipped is None else skipped), len(base))
    parts = {"stale": len(view.stale), "stale_in_file": sum(1 for i in view.stale if base.contains(i)),
             "delta": len(view.delta), "fetch": fetch,
             "hnsw_200": timed(lambda q: base.search(q, 200), qvecs),
             "hnsw_fetch": timed(lambda q: base.search(q, fetch), qvecs)}
    if view.delta:
        matrix = np.stack(list(view.delta.values()))
        parts["exact_delta"] = timed(lambda q: matrix @ q, qvecs)
    return parts


def after_side(work: Path, items: int, reps: int, queries: int) -> dict[str, Any]:
    from pixdex.indexer.sections import IndexSettings
    from pixdex.query.parse import Filters
    from pixdex.query.reader import Reader
    from pixdex.query.text import text_hits

    root = work / "lib512"
    shutil.rmtree(root, ignore_errors=True)
    defaults = IndexSettings()
    lib = Library(root, MODEL_ID, NDIM, defaults)
    t0 = time.perf_counter()
    lib.add(SEED, 0, items)
    build = time.perf_counter() - t0
    log(f"after: built {items} in {build:.1f} s")
    save = lib.close()
    reopen = lib.open(defaults)
    reader = Reader(lib.layout, defaults)  # one reader for the whole run
    qvecs = list(unit_vectors(np.random.default_rng(13), queries, NDIM))
    words = query_words(queries * 3, lib.vocab)
    first = first_vector_query(reader, qvecs[0])
    commits = measure_commits(lib, reader, reps, qvecs[0])
    log(f"after: commit {json.dumps(commits['commit'])}")
    lib.close()  # the reps' vectors reach the file: the delta is 0 again
    text = timed(lambda w: text_hits(reader.text(), w, Filters(), 200), words)
    vector = timed(vector_search(reader), qvecs)
    log(f"after: text {json.dumps(text)} vector {json.dumps(vector)}")
    keep = IndexSettings(save_seconds=86_400.0, save_changes=10_000_000)
    deltas = measure_deltas(lib, reader, qvecs, keep)
    wal = lib.layout.catalog.with_name(lib.layout.catalog.name + "-wal")
    sizes = {"catalog": lib.layout.catalog.stat().st_size, "catalog_wal": wal.stat().st_size if wal.exists() else 0,
             "vectors": lib.layout.vector_file.stat().st_size, "fulltext": dir_size(lib.layout.fulltext)}
    reader.close()
    lib.lookup.close()
    return {"versions": versions(), "build_s": build, "save_s": save, "reopen_s": reopen, "first_query_ms": first,
            **commits, "text": text, "vector": vector, "deltas": deltas, "sizes": sizes}


def hybrid_side(work: Path, models: Path, items: int, queries: int) -> dict[str, Any]:
    """`SearchService.search` over a library of the stand-in CLIP's 32-d vectors (its text tower embeds the query)."""
    from pixdex.indexer.embedder import ClipModel
    from pixdex.indexer.export import STANDIN_CLIP
    from pixdex.indexer.settings import config_from_dict
    from pixdex.query.reader import Reader
    from pixdex.query.service import SearchService

    clip = ClipModel(models / "clip" / STANDIN_CLIP)
    root = work / "lib32"
    shutil.rmtree(root, ignore_errors=True)
    config = config_from_dict({"paths": {"data_dir": str(root), "model_dir": str(models)},
                               "models": {"clip": STANDIN_CLIP, "tagger": ""}}, dict(os.environ))
    lib = Library(root, clip.id, clip.dim, config.index)
    t0 = time.perf_counter()
    lib.add(SEED, 0, items)
    build = time.perf_counter() - t0
    lib.close()
    lib.lookup.close()
    service = SearchService(config, Reader(config.layout, config.index))
    words = query_words(queries, lib.vocab, seed=17)
    hits = len(service.search(words[0], 20).hits)
    result = {"ndim": clip.dim, "build_s": build, "hits_first_query": hits,
              "latency": timed(lambda w: service.search(w, 20), words)}
    log(f"hybrid: {json.dumps(result)}")
    return result


# 3. The command line ---------------------------------------------------------------------------------------


def cli_side(work: Path, models: Path, runs: int) -> dict[str, Any]:
    from index_bench import make_photo

    from pixdex.indexer.export import STANDIN_CLIP, STANDIN_TAGGER

    root = work / "cli"
    shutil.rmtree(root, ignore_errors=True)
    pics = root / "pics"
    pics.mkdir(parents=True)
    for i in range(12):
        make_photo(i, pics / f"photo_{i:02d}.jpg", size=(1024, 768))
    config = root / "config.toml"
    config.write_text(f"[library]\nfolders = {json.dumps([str(pics)])}\n"
                      f"[paths]\ndata_dir = {json.dumps(str(root / 'data'))}\nmodel_dir = {json.dumps(str(models))}\n"
                      f'[models]\nclip = "{STANDIN_CLIP}"\ntagger = "{STANDIN_TAGGER}"\n')
    pixdex = Path(sys.executable).parent / "pixdex"
    base = [str(pixdex), "--config", str(config)]
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg-config")}
    subprocess.run([*base, "index", "--json"], env=env, check=True, capture_output=True)
    out: dict[str, Any] = {"images": 12, "floor_mib": run_measured(["/bin/true"], env)[1]}
    for name, argv in (("search", [*base, "search", "beach sunset"]), ("status", [*base, "status"])):
        run_measured(argv, env)  # warm the page cache
        samples = [run_measured(argv, env) for _ in range(runs)]
        walls, peaks = [s[0] for s in samples], [s[1] for s in samples]
        out[name] = {"runs": runs, "wall_ms": float(np.median(walls)) * 1000, "wall_min_ms": min(walls) * 1000,
                     "wall_max_ms": max(walls) * 1000, "rss_mib": float(np.median(peaks)), "exit": samples[0][2]}
    for name, argv in (("status", [*base, "status"]), ("search", [*base, "search", "beach sunset"])):
        out[f"imports {name}"] = import_profile([sys.executable, "-X", "importtime", *argv], env)
    log(f"cli: {json.dumps({k: v for k, v in out.items() if not k.startswith('imports')})}")
    return out


# Started by a small launcher process: on Linux a child's ru_maxrss starts from the RSS of the process that
# forked it (this one is large), so the launcher spawns the command and reports the command's own rusage.
LAUNCHER = """
import json, os, sys, time
null = os.open(os.devnull, os.O_WRONLY)
t0 = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], dict(os.environ),
                     file_actions=[(os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)])
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
"""


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit status of one process, from its own rusage."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], env=env, capture_output=True, text=True,
                          check=True)
    wall, rss, status = json.loads(proc.stdout)
    return float(wall), float(rss), int(status)


HEAVY = ("numpy", "onnxruntime", "usearch", "tantivy", "PIL", "tokenizers", "pebble", "tqdm", "psutil", "torch")


def import_profile(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    top: list[tuple[str, int]] = []
    modules = set()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        modules.add(name.strip())
        if not name[1:].startswith(" "):  # a top-level import (nested ones are indented)
            top.append((name.strip(), int(cumulative)))
    top.sort(key=lambda t: -t[1])
    return {"total_ms": sum(us for _, us in top) / 1000, "top": [(n, us / 1000) for n, us in top[:8]],
            "heavy": sorted(h for h in HEAVY if h in modules), "modules": len(modules)}


# 4. Model memory -------------------------------------------------------------------------------------------


def model_rss(clip_dir: Path, ttl: float) -> dict[str, Any]:
    """RSS (MiB) of this process around loading both CLIP towers and the cache's TTL unload (own process)."""
    import ctypes
    import gc

    import psutil

    from pixdex.indexer.modelcache import ModelCache
    from pixdex.indexer.session import OnnxSession

    proc = psutil.Process()

    def rss() -> float:
        gc.collect()
        return proc.memory_info().rss / 2**20

    size = json.loads((clip_dir / "visual" / "preprocess_cfg.json").read_text())["size"]
    size = int(size[0] if isinstance(size, list) else size)
    cache = ModelCache(ttl)
    visual = OnnxSession(clip_dir / "visual" / "model.onnx", 0, cache)
    textual = OnnxSession(clip_dir / "textual" / "model.onnx", 1, cache)
    out: dict[str, Any] = {"files_mib": sum(p.stat().st_size for p in clip_dir.rglob("*.onnx")) / 2**20,
                           "imported": rss()}
    t0 = time.perf_counter()
    visual.run(np.zeros((1, 3, size, size), np.float32))
    out["visual_load_s"] = time.perf_counter() - t0
    out["visual loaded, batch 1"] = rss()
    visual.run(np.zeros((16, 3, size, size), np.float32))
    out["visual loaded, batch 16"] = rss()
    textual.run(np.zeros((1, 77), np.int64 if "int64" in textual.input.type else np.int32))
    out["both towers loaded"] = rss()
    t0 = time.perf_counter()
    while cache.loaded() and time.perf_counter() - t0 < ttl * 20 + 10:
        time.sleep(0.05)
    out["unloaded_after_s"] = time.perf_counter() - t0
    out["after TTL unload"] = rss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    out["after TTL unload + malloc_trim(0)"] = rss()
    t0 = time.perf_counter()
    visual.run(np.zeros((1, 3, size, size), np.float32))
    out["visual_reload_s"] = time.perf_counter() - t0
    out["visual reloaded"] = rss()
    return out


def prepare_models(models: Path, clip_arch: str) -> str:
    """Stand-ins (always: the CLI and hybrid parts use them) and, if asked, a random-weight real-size CLIP."""
    from pixdex.indexer import export

    if not (models / "clip" / export.STANDIN_CLIP / "visual" / "model.onnx").exists():
        export.write_standin_clip(models)
    if not (models / "tagger" / export.STANDIN_TAGGER / "model.onnx").exists():
        export.write_standin_tagger(models)
    if not clip_arch:
        return export.STANDIN_CLIP
    name = f"{clip_arch}__random"
    if not (models / "clip" / name / "textual" / "model.onnx").exists():
        open_clip = export.import_open_clip()
        model, _, _ = open_clip.create_model_and_transforms(clip_arch)
        with export.staged_dir(models / "clip" / name) as stage:
            export.export_clip(model, open_clip.get_model_config(clip_arch), stage)
    return name


def in_subprocess(python: Path | str, *args: str, timeout: float = 1800) -> Any:
    """Run this file with `args` in another interpreter; its last stdout line is JSON."""
    proc = subprocess.run([str(python), str(Path(__file__).resolve()), *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# The report ------------------------------------------------------------------------------------------------


def ratio(before: float, after: float) -> str:
    return f"{before / after:,.0f}×" if before / after >= 10 else f"{before / after:.2f}×"


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    from index_bench import machine

    from pixdex.indexer.sections import IndexSettings

    old, new, cli, rss, hybrid = r["old"], r["new"], r["cli"], r["rss"], r["hybrid"]
    defaults = IndexSettings()
    n = f"{args.items:,}"
    d = new["deltas"]
    lines = [
        f"## Indexing core at {n} items: commit cost, query latency, start-up, model memory",
        "",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python bench/core_bench.py --items {args.items} --reps {args.reps}"
        f" --queries {args.queries}" + (f" --clip-arch {args.clip_arch}`" if args.clip_arch else " --clip-arch ''`")
        + f" ({r['wall_s'] / 60:.1f} min wall, {r['date']}). Other processes used "
        + ", ".join(f"{sec:.0f}" for sec in r["disturbed"].values()) + " CPU-seconds during the "
        + ", ".join(r["disturbed"]) + " parts (from /proc/stat minus this run's own rusage; 0 = undisturbed).",
        f"- After: {r['after_rev']}. Before: commit {OLD_REV}, installed from `git archive` into its own venv. "
        f"After: numpy {new['versions']['numpy']}, usearch {new['versions']['usearch']}, "
        f"tantivy {new['versions']['tantivy']}"
        + ("; the same in the old venv." if old["versions"] == new["versions"] else
           f"; the old venv has {', '.join(f'{k} {v}' for k, v in old['versions'].items())}."),
        f"- Library: {n} synthetic items built through each version's own `Writer` (no images): random unit "
        f"{NDIM}-d float32 vectors (usearch f16, connectivity 16, expansion 128), 8 tags + a 5-word caption per "
        "item drawn from a Zipf distribution over 5,000 made-up words, paths in dated folders; fixed seeds, so "
        f"both versions hold the same data. After the build: vector file {new['sizes']['vectors'] / 2**20:.0f} MB, "
        f"text index {new['sizes']['fulltext'] / 2**20:.0f} MB, catalog file (it holds the embeddings too) "
        f"{new['sizes']['catalog'] / 2**20:.0f} MB (its WAL, grown by the build's {CHUNK:,}-item transactions, "
        f"{new['sizes']['catalog_wal'] / 2**20:.0f} MB). Building took {old['build_s']:.0f} s before and "
        f"{new['build_s']:.0f} s after (in chunks of {CHUNK:,}; not a pipeline figure).",
        "",
        f"### 1. One commit of one new item into the {n}-item library",
        "",
        f"Median (min–max) over {args.reps} repetitions; each adds a different new item.",
        "",
        "| | before (73c4fd3) | after | before / after |",
        "|---|---:|---:|---:|",
        f"| store 1 item + commit (ms) | {old['commit']['p50']:.1f} "
        f"({old['commit']['min']:.1f}–{old['commit']['max']:.1f})"
        f" | {new['commit']['p50']:.1f} ({new['commit']['min']:.1f}–{new['commit']['max']:.1f})"
        f" | {ratio(old['commit']['p50'], new['commit']['p50'])} |",
        f"| register 1 new file + commit, as a scan does (ms) | {old['register']['p50']:.1f} "
        f"| {new['register']['p50']:.1f}"
        f" | {ratio(old['register']['p50'], new['register']['p50'])} |",
        "",
        "(A ratio below 1 means slower now.)",
        "",
        "- *store + commit*: before, `Writer.store` + `Writer.commit` = tantivy commit, a rewrite of the whole "
        "usearch file, SQLite commit; after, `Writer.store([item])` + `Writer.flush()` = SQLite commit, then "
        "tantivy and the in-memory usearch index catch up from `changed_since`. The usearch file was "
        + ("not saved during these repetitions" if not new["file_saved_during_reps"]
           else "**saved during these repetitions**")
        + ".",
        "- *register*: before, `add_pending` + `commit` = an SQLite commit (nothing for tantivy, an unchanged "
        "usearch index is not saved); after, `register` + `flush()` also commits tantivy and rewrites its "
        "manifest, because `sync_text` deletes the text document of every changed row that is not done, a new "
        "pending file included.",
        f"- What the deferred save costs when it comes (every `index.save_changes` = {defaults.save_changes:,} "
        f"changed vectors, or `index.save_seconds` = {defaults.save_seconds:g} s after a change; defaults): "
        f"`Writer.close()` with 5,000 unsaved vectors at {n} items, "
        f"almost all of it the save, took {d['save after new'] * 1000:.0f} ms (new items) and "
        f"{d['save after updated'] * 1000:.0f} ms (re-embedded). Re-opening the writer (loading the file) took "
        f"{new['reopen_s'] * 1000:.0f} ms.",
        f"- A reader sees each commit at its next query: the first query after a commit took "
        f"{new['text_after_commit']['p50']:.1f} ms (text, median) and {new['vector_after_commit']['p50']:.1f} ms "
        "(vector, including the catch-up over the committed-but-unsaved vectors).",
        "",
        f"### 2. Query latency at {n} items, one `Reader` open for the whole run",
        "",
        f"200 candidates per side (`search.candidates`), no filters; {args.queries * 3} text queries of 1–3 words "
        f"drawn like the library's words, {args.queries} random unit query vectors; 10 warm-up queries not counted. "
        "Before: the old `text_hits(FullText, …)` and `VectorIndex(read_only=True).search` on stores opened once.",
        "",
        "| query | before p50 | before p99 | after p50 | after p99 | before / after (p50) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| text only (`text_hits`) | {old['text']['p50']:.2f} | {old['text']['p99']:.2f} | {new['text']['p50']:.2f} "
        f"| {new['text']['p99']:.2f} | {ratio(old['text']['p50'], new['text']['p50'])} |",
        f"| vector (`VectorView.search`, file saved) | {old['vector']['p50']:.2f} | {old['vector']['p99']:.2f} "
        f"| {new['vector']['p50']:.2f} | {new['vector']['p99']:.2f} "
        f"| {ratio(old['vector']['p50'], new['vector']['p50'])} |",
        f"| hybrid (`SearchService.search`, k=20, {hybrid['ndim']}-d library) | – | – | {hybrid['latency']['p50']:.2f} "
        f"| {hybrid['latency']['p99']:.2f} | – |",
        "",
        "(milliseconds.) Text and vector latencies include the reader's check for newer commits before each query; "
        f"the hybrid row is a second {n}-item library with the stand-in CLIP's {hybrid['ndim']}-d vectors, "
        "because its query is embedded by the stand-in text tower: it adds text-tower inference, the vector "
        "side on 32-d vectors, fusion and the catalog lookup of the hits to the text side.",
        "",
        "Vector query latency while the saved file is behind the catalog (`VectorView`: the memory-mapped file, "
        "minus the ids stamped after it, plus their current vectors searched exactly); the writer saves the file "
        f"once `index.save_changes` = {defaults.save_changes:,} vectors changed (the default):",
        "",
        "| the saved file is behind by | p50 | p99 | first query after the commit | the commit (s) |",
        "|---|---:|---:|---:|---:|",
        f"| nothing | {new['vector']['p50']:.2f} | {new['vector']['p99']:.2f} | – | – |",
    ]
    labels = {"new": "new items", "updated": "re-embedded items",
              "registered": "files a scan registered (pending, no vector yet)"}
    for key in [*(f"new {n}" for n in DELTAS), *(f"updated {n}" for n in DELTAS), "registered 5000"]:
        kind, delta = key.split()
        row = d[key]
        lines.append(f"| {int(delta):,} {labels[kind]} | {row['latency']['p50']:.2f} | {row['latency']['p99']:.2f} "
                     f"| {row['first_query_ms']:.0f} | {row['commit_s']:.1f} |")
    lines += [
        "",
        f"(milliseconds unless marked; {args.queries} queries each.) Where the time goes at 5,000 (100 queries "
        "each, p50 in ms): the view skips the file's entries for ids stamped after it, so it asks HNSW for more "
        "than 200 neighbours, and it searches the delta's vectors exactly (here the matrix product alone):",
        "",
        "| 5,000 … | ids stamped after the file | of them in the file | HNSW k the view asks | HNSW at k = 200 "
        "| HNSW at that k | exact over the delta |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("new", "updated", "registered"):
        part = d[f"{kind} 5000"]["parts"]
        exact = f"{part['exact_delta']['p50']:.2f}" if "exact_delta" in part else "–"
        lines.append(f"| {labels[kind]} | {part['stale']:,} | {part['stale_in_file']:,} | {part['fetch']:,} "
                     f"| {part['hnsw_200']['p50']:.2f} | {part['hnsw_fetch']['p50']:.2f} | {exact} |")
    lines += [
        "",
        "Against the saved-file p50, a delta of "
        + ", ".join(f"{n:,}" for n in DELTAS) + " costs "
        + " / ".join(f"{d[f'new {n}']['latency']['p50'] / new['vector']['p50']:.1f}×" for n in DELTAS)
        + " for new items and "
        + " / ".join(f"{d[f'updated {n}']['latency']['p50'] / new['vector']['p50']:.1f}×" for n in DELTAS)
        + f" for re-embedded ones; each save costs the writer thread about {d['save after new'] * 1000:.0f} ms. "
        "Query figures of a few milliseconds moved by up to about a third between runs of this script on this "
        "machine: read the ratios within one run.",
        "",
        "### 3. Command-line start-up",
        "",
        f"The installed `.venv/bin/pixdex` over a folder of {cli['images']} indexed JPEGs with the stand-in models; "
        f"median of {cli['search']['runs']} runs after one warm-up run. Peak RSS is the command's own `ru_maxrss`, "
        f"read by a small launcher process that spawns it (`/bin/true` through it reads {cli['floor_mib']:.0f} MiB: "
        "the floor of this method).",
        "",
        "| command | wall median (ms) | min–max (ms) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for name, label in (("search", '`pixdex search "beach sunset"`'), ("status", "`pixdex status`")):
        c = cli[name]
        lines.append(f"| {label} | {c['wall_ms']:.0f} | {c['wall_min_ms']:.0f}–{c['wall_max_ms']:.0f} "
                     f"| {c['rss_mib']:.0f} |")
    st, se = cli["imports status"], cli["imports search"]
    lines += [
        "",
        f"`python -X importtime` (one run): `pixdex status` imports {st['modules']} modules "
        f"in {st['total_ms']:.0f} ms, "
        + (f"of the heavy ones only {', '.join(st['heavy'])}" if st["heavy"] else "none of the heavy ones")
        + f" (not imported: {', '.join(h for h in HEAVY if h not in st['heavy'])}). "
        "Its largest top-level imports (cumulative ms): "
        + ", ".join(f"{name} {ms:.0f}" for name, ms in st["top"][:6]) + ".",
        f"`pixdex search` imports {se['modules']} modules in {se['total_ms']:.0f} ms, including "
        f"{', '.join(se['heavy'])}; largest: " + ", ".join(f"{name} {ms:.0f}" for name, ms in se["top"][:6]) + ".",
        "",
        "### 4. Model memory and the idle unload",
        "",
        f"`OnnxSession`s through a `ModelCache` with a {args.ttl:g} s TTL, in a process of their own: "
        + (f"{r['clip_name']} (the real architecture with random weights, exported by the real exporter; "
           f"{rss['files_mib']:.0f} MB of ONNX)" if args.clip_arch else
           f"the tiny stand-in CLIP ({rss['files_mib']:.0f} MB of ONNX)")
        + "; image tower on all cores, text tower on 1 thread.",
        "",
        "| state | RSS (MiB) |",
        "|---|---:|",
    ]
    for key in ("imported", "visual loaded, batch 1", "visual loaded, batch 16", "both towers loaded",
                "after TTL unload", "after TTL unload + malloc_trim(0)", "visual reloaded"):
        lines.append(f"| {key} | {rss[key]:.0f} |")
    lines += [
        "",
        f"The TTL unload gave back {rss['both towers loaded'] - rss['after TTL unload']:.0f} of the "
        f"{rss['both towers loaded'] - rss['imported']:.0f} MiB the two towers added; an extra `malloc_trim(0)` "
        f"returned {rss['after TTL unload'] - rss['after TTL unload + malloc_trim(0)']:.0f} MiB more. "
        f"Loading the image tower took {rss['visual_load_s']:.2f} s the first time and {rss['visual_reload_s']:.2f} s "
        f"after the unload; the sweeper unloaded both towers {rss['unloaded_after_s']:.1f} s after the last use. "
        "The `malloc_trim(0)` row is an extra call by the benchmark after the unload: what it returns is heap the "
        "unload had freed but glibc still kept from the system.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--queries", type=int, default=300, help="vector queries per measurement (text: 3×)")
    parser.add_argument("--cli-runs", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=2.0, help="model cache TTL for the memory figure")
    parser.add_argument("--clip-arch", default="ViT-B-32", help="open_clip architecture with random weights for "
                        "the memory figure ('' = the tiny stand-in)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    parser.add_argument("--from-json", type=Path, help="only write the report again from a run's "
                        "bench/out/core_bench.json (after editing the report's wording)")
    parser.add_argument("--old-driver", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-rss", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare-models", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.old_driver:
        print(json.dumps(old_driver(args.old_driver, args.items, args.reps, args.queries)))
        return
    if args.model_rss:
        print(json.dumps(model_rss(args.model_rss, args.ttl)))
        return
    if args.prepare_models:
        print(json.dumps(prepare_models(args.prepare_models, args.clip_arch)))
        return

    from index_bench import replace_section

    if args.from_json:
        results = json.loads(args.from_json.read_text())
        saved = argparse.Namespace(**{**vars(args), **results["args"]})
        replace_section(args.out, "core_bench", report(results, saved))
        return
    started = time.perf_counter()
    others_start = others_cpu()
    work = OUT / "core"
    models = OUT / "models"
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    disturbed: dict[str, float] = {}  # CPU-seconds other processes used during each part
    log("models")
    clip_name = in_subprocess(python, "--prepare-models", str(models), "--clip-arch", args.clip_arch)
    with watch(disturbed, "before"):
        log("before: the old version")
        old = in_subprocess(old_python(), "--old-driver", str(work / "old"), "--items", str(args.items),
                            "--reps", str(args.reps), "--queries", str(args.queries))
    shutil.rmtree(work / "old", ignore_errors=True)
    log(f"before: {json.dumps({k: old[k] for k in ('build_s', 'commit', 'text', 'vector')})}")
    with watch(disturbed, "after"):
        new = after_side(work, args.items, args.reps, args.queries)
    with watch(disturbed, "hybrid"):
        hybrid = hybrid_side(work, models, args.items, args.queries)
    with watch(disturbed, "cli"):
        cli = cli_side(work, models, args.cli_runs)
    with watch(disturbed, "memory"):
        log("model memory")
        rss = in_subprocess(python, "--model-rss", str(models / "clip" / clip_name), "--ttl", str(args.ttl))
    log(f"other processes' CPU-seconds per part: {json.dumps(disturbed)}")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = [line[3:] for line in subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "daemon", "indexer", "query"],
        capture_output=True, text=True).stdout.splitlines()]
    results = {"old": old, "new": new, "hybrid": hybrid, "cli": cli, "rss": rss, "clip_name": clip_name,
               "after_rev": f"commit {head}" + (f" plus uncommitted changes to {', '.join(dirty)}" if dirty else ""),
               "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - started,
               "other_cpu_s": max(0.0, others_cpu() - others_start), "disturbed": disturbed,
               "args": {k: getattr(args, k) for k in ("items", "reps", "queries", "cli_runs", "ttl", "clip_arch")}}
    (OUT / "core_bench.json").write_text(json.dumps(results, indent=1, default=str))
    text = report(results, args)
    replace_section(args.out, "core_bench", text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
