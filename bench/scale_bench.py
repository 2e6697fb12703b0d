"""A large synthetic library through the real writer, then every figure of issue 19's table, encoder excluded.

    nice .venv/bin/python bench/scale_bench.py build --items 1000000 --root /tmp/scale [--no-vectors]
    nice .venv/bin/python bench/scale_bench.py query --root /tmp/scale [--queries 200]
    nice .venv/bin/python bench/scale_bench.py restart --root /tmp/scale
    nice .venv/bin/python bench/scale_bench.py recall [--size 100000] [--queries 100]

`build` feeds `--items` synthetic items (512-d random unit vectors, Zipf tags and captions, a rating, a position for
30%: core_bench's `synth_batch`) through the real `Writer` (core_bench's `Library`: register, then `store` of
20,000 at a time — the bulk path `pixdex rebuild` and the fill after `pixdex index --ray` take) and reports the rate
(wall and CPU; the vector index's HNSW inserts apart from the catalog and the text index), the WAL's largest size
during the build and the bytes per item of each store, projected to 10M. `query` runs what `SearchService.search`
runs after the text tower — the vector side under the filters, the text side, RRF and the hits' catalog rows — for
words alone and words with each kind of filter (p50/p99, wall and this thread's CPU), the 20 hits' lookup alone, and
the recall@10 of the library's graph. `restart` times a fresh process from its start to its first answer. `recall`
builds usearch indexes of uniform and of clustered vectors and measures recall@10 against exact search for
expansion, connectivity and f16/f32. Run `query` with another checkout on PYTHONPATH to compare code over the same
library. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import core_bench
from core_bench import SEED, Library, dir_size, percentiles, query_words, synth_batch, unit_vectors, vocabulary

MODEL = "bench-random-512"
NDIM = 512


class Split:
    """Seconds the writer spent topping up the vector index (the HNSW graph's inserts), the rest being the catalog
    and the text index: `VectorIndex.top_up` timed in place."""

    def __init__(self) -> None:
        from pixdex.indexer.vectors import VectorIndex

        self.vectors = 0.0
        self.vectors_cpu = 0.0  # CPU-seconds of the whole process meanwhile (usearch's threads included)
        self.wal_max = 0
        self.wal_path: Path | None = None
        top_up = VectorIndex.top_up

        def timed_top_up(index: Any, catalog: Any) -> int:
            t0, cpu0 = time.perf_counter(), time.process_time()
            try:
                return top_up(index, catalog)
            finally:
                self.vectors += time.perf_counter() - t0
                self.vectors_cpu += time.process_time() - cpu0
                if self.wal_path is not None and self.wal_path.exists():
                    self.wal_max = max(self.wal_max, self.wal_path.stat().st_size)

        VectorIndex.top_up = timed_top_up  # type: ignore[method-assign]
        self.synth_cpu = 0.0  # making the synthetic items (this bench's own work, not the writer's)
        synth = core_bench.synth_batch

        def timed_synth(*args: Any) -> Any:
            cpu0 = time.process_time()
            try:
                return synth(*args)
            finally:
                self.synth_cpu += time.process_time() - cpu0

        core_bench.synth_batch = timed_synth


def build(root: Path, items: int, vectors: bool = True) -> dict[str, Any]:
    from pixdex.indexer.sections import IndexSettings

    split = Split()
    lib = Library(root, MODEL, NDIM, IndexSettings(), vectors)
    split.wal_path = Path(f"{lib.layout.catalog}-wal")
    split.vectors = split.vectors_cpu = 0.0  # the top-up at open
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    lib.add(SEED, 0, items)
    took = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    save0 = time.perf_counter()
    lib.close()
    save = time.perf_counter() - save0
    lib.lookup.close()
    data = lib.layout
    wal = Path(f"{data.catalog}-wal")
    sizes = {"catalog": data.catalog.stat().st_size, "wal": wal.stat().st_size if wal.exists() else 0,
             "vectors": dir_size(data.root / "vectors"), "text": dir_size(data.root / "fulltext"),
             "sidecars (2.7 KB each, bench/sidecar_bench.py)": 2700 * items}
    per_item = {k: v / items for k, v in sizes.items()}
    rest = took - split.vectors
    return {"items": items, "build_s": took, "items_per_s": items / took, "process_cpu_s": cpu,
            "vector_top_up_s": split.vectors, "catalog_and_text_s": rest,
            "catalog_and_text_items_per_s": items / rest,
            "vector_items_per_s": items / split.vectors if split.vectors else None,
            "vector_top_up_cpu_s": split.vectors_cpu, "synthesis_cpu_s": split.synth_cpu,
            "catalog_and_text_cpu_s": cpu - split.vectors_cpu - split.synth_cpu,
            "catalog_and_text_items_per_cpu_s": items / (cpu - split.vectors_cpu - split.synth_cpu),
            "vector_items_per_cpu_s": items / split.vectors_cpu if split.vectors_cpu else None,
            "close_and_save_s": save, "wal_max_bytes_during_build": split.wal_max,
            "bytes_per_item": per_item, "sizes": sizes,
            "projected_10M_GB": {k: v * 10_000_000 / 1e9 for k, v in per_item.items()}}


def timed_both(fn: Any, inputs: list[Any], warmup: int = 10) -> dict[str, float]:
    """`timed`'s wall-clock percentiles, and the same of this thread's CPU time (what a query costs, whatever else
    the machine runs: on a shared machine the wall figure waits for a core)."""
    for value in inputs[:warmup]:
        fn(value)
    wall, cpu = [], []
    for value in inputs:
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(value)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return percentiles(wall) | {f"cpu_{k}": v for k, v in percentiles(cpu).items() if k in ("p50", "p99")}


def tag_shares(items: int, vocab: list[str]) -> Counter[str]:
    """How many items carry each tag (counted on a sample of the same generator)."""
    sample = min(items, 20_000)
    batch, _ = synth_batch(SEED, 0, sample, 4, vocab)
    counts: Counter[str] = Counter(t["name"] for b in batch for t in b["tags"])
    return Counter({t: n / sample for t, n in counts.items()})


def query(root: Path, queries: int) -> dict[str, Any]:
    from pixdex.indexer.settings import config_from_dict
    from pixdex.query.fuse import rrf
    from pixdex.query.parse import Filters, parse_query
    from pixdex.query.reader import Reader
    from pixdex.query.service import SearchService
    from pixdex.query.text import text_hits

    config = config_from_dict({"paths": {"data_dir": str(root)}}, {})
    reader = Reader(config.layout, config.index)
    service = SearchService(config, reader)
    vocab = vocabulary()
    items = reader.catalog().db.execute("SELECT count(*) FROM images").fetchone()[0]
    shares = tag_shares(items, vocab)
    frequent = max(shares, key=lambda t: shares[t])
    rare = min((t for t in shares if shares[t] >= 0.001), key=lambda t: abs(shares[t] - 0.001))
    folder = reader.catalog().db.execute("SELECT path FROM images WHERE id = (SELECT min(id) FROM images)"
                                         ).fetchone()[0].decode().rsplit("/", 2)[0]
    kinds = {
        "words": Filters(),
        f"tag: frequent ({shares[frequent]:.0%})": Filters(tags=(frequent,)),
        f"tag: rare ({shares[rare]:.2%})": Filters(tags=(rare,)),
        "folder: a year (4%)": Filters(folders=(folder,)),
        "in: a collection of one year's folder (4%)": Filters(within=((folder,),)),
        "date range: one year (4%)": Filters(after=datetime(2003, 1, 1), before=datetime(2004, 1, 1)),
        "date range: half the years (48%)": Filters(after=datetime(2000, 1, 1), before=datetime(2012, 7, 1)),
        "rating:>=4 (33%)": parse_query("x rating:>=4").filters,
        "rating:5 (17%)": parse_query("x rating:5").filters,
        "near:48.85,2.35,20 (10%)": parse_query("x near:48.85,2.35,20").filters,
    }
    words = query_words(queries, vocab, seed=17)
    vectors = unit_vectors(np.random.default_rng(5), queries, NDIM)
    space = (MODEL, NDIM)
    candidates = config.search.candidates
    out: dict[str, Any] = {"items": items, "tags": {"frequent": [frequent, shares[frequent]],
                                                    "rare": [rare, shares[rare]]}}
    for name, filters in kinds.items():
        def one(n: int, filters: Filters = filters) -> int:
            text = reader.text()
            assert text is not None
            found = service._vector_side(space, text, vectors[n], filters, count=candidates)
            said = text_hits(text, words[n], filters, candidates)
            return len(service._fuse(found, said, 20))

        hits = [one(n) for n in range(3)]
        out[name] = {**timed_both(one, list(range(queries))), "hits": hits}
        print(f"{name}: {json.dumps(out[name])}", file=sys.stderr)
    # The 20 hits' catalog rows alone, after fusing the plain-words candidates (what `_hits` reads).
    text = reader.text()
    assert text is not None
    fused = []
    for n in range(queries):
        found = service._vector_side(space, text, vectors[n], Filters(), count=candidates)
        fused.append(rrf(found, text_hits(text, words[n], Filters(), candidates)))
    out["hits_lookup (20 rows of ~400 fused)"] = timed_both(lambda f: service._hits(f, 20), fused)
    out["recall@10 of the library's own vectors"] = recall_on_view(reader, vectors[:100])
    return out


def recall_on_view(reader: Any, queries: np.ndarray) -> dict[str, Any]:
    """ANN recall@10 of the saved file's graph against an exact search of the same file."""
    view = reader.vectors(MODEL, NDIM)
    base = view.base
    hits = 0
    took = []
    for q in queries:
        t0 = time.perf_counter()
        found = base.search(q, 10)
        took.append(time.perf_counter() - t0)
        truth = base.search(q, 10, exact=True)
        hits += len(set(found.keys.tolist()) & set(truth.keys.tolist()))
    return {"recall": hits / (10 * len(queries)), "ann_p50_ms": float(np.percentile(took, 50) * 1000),
            "expansion_search": base.expansion_search, "connectivity": base.connectivity}


def clustered(rng: np.random.Generator, count: int, ndim: int, centres: int = 1000, spread: float = 0.5
              ) -> np.ndarray:
    """Unit vectors around `centres` random centres (what CLIP embeddings of photos look like: near-copies,
    shared subjects), drawn with `spread` of noise per dimension relative to the centre's."""
    middle = unit_vectors(rng, centres, ndim)
    picks = rng.integers(0, centres, count)
    out = middle[picks] + spread * unit_vectors(rng, count, ndim)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def recall(size: int, queries: int) -> dict[str, Any]:
    """Why uniform random vectors fall and clustered ones do not: recall@10 of usearch's HNSW (pixdex's settings:
    cos, connectivity 16, f16) against exact search, over `size` vectors, for each kind of vectors, expansion,
    connectivity and scalar type; plus the gap between the 10th and 11th neighbour's cosine (what f16 can blur)."""
    from usearch.index import Index

    rng = np.random.default_rng(23)
    out: dict[str, Any] = {"size": size, "queries": queries}
    data = {"uniform": unit_vectors(rng, size + queries, NDIM), "clustered": clustered(rng, size + queries, NDIM)}
    keys = np.arange(size, dtype=np.uint64)
    for kind, vectors in data.items():
        base, probe = vectors[:size], vectors[size:]
        scores = probe @ base.T
        top = np.sort(scores, axis=1)[:, ::-1][:, :11]
        truth = [set(np.argsort(-row)[:10].tolist()) for row in scores]
        f16 = base.astype(np.float16).astype(np.float32)
        truth16 = [set(np.argsort(-row)[:10].tolist()) for row in probe @ f16.T]
        out[kind] = {"cos_10th": float(top[:, 9].mean()), "cos_11th": float(top[:, 10].mean()),
                     "cos_median_pair": float(np.median(scores)),
                     "exact_recall_f16_vs_f32": float(np.mean([len(a & b) / 10 for a, b in zip(truth, truth16,
                                                                                              strict=True)]))}
        for dtype, connectivity in (("f16", 16), ("f32", 16), ("f16", 32)):
            index = Index(ndim=NDIM, metric="cos", dtype=dtype, connectivity=connectivity)
            t0 = time.perf_counter()
            index.add(keys, base)
            built = time.perf_counter() - t0
            for expansion in (64, 128, 256, 512, 1024):
                index.expansion_search = expansion
                t1 = time.perf_counter()
                found = index.search(probe, 10)
                took = (time.perf_counter() - t1) / queries
                got = sum(len(set(found.keys[n].tolist()) & truth[n]) for n in range(queries)) / (10 * queries)
                out[kind][f"{dtype} M={connectivity} ef={expansion}"] = {"recall": got, "ms_per_query": took * 1000,
                                                                          "build_s": built}
            print(f"{kind} {dtype} M={connectivity}: {json.dumps(out[kind])}", file=sys.stderr)
    return out


def first(root: Path) -> dict[str, Any]:
    """Restart: open the stores in a fresh process and answer one query (imports included: the caller times the
    process from its start)."""
    from pixdex.indexer.settings import config_from_dict
    from pixdex.query.parse import Filters
    from pixdex.query.reader import Reader
    from pixdex.query.service import SearchService
    from pixdex.query.text import text_hits

    config = config_from_dict({"paths": {"data_dir": str(root)}}, {})
    t0 = time.perf_counter()
    reader = Reader(config.layout, config.index)
    service = SearchService(config, reader)
    text = reader.text()
    assert text is not None
    vector = unit_vectors(np.random.default_rng(1), 1, NDIM)[0]
    found = service._vector_side((MODEL, NDIM), text, vector, Filters())
    hits = service._fuse(found, text_hits(text, "bala", Filters(), 200), 20)
    return {"open_and_first_query_s": time.perf_counter() - t0, "hits": len(hits)}


def restart(root: Path) -> dict[str, Any]:
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "first", "--root", str(root)], capture_output=True,
                              text=True, check=True)
        runs.append({"process_start_to_answer_s": time.perf_counter() - t0, **json.loads(done.stdout)})
    return {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("build", "query", "recall", "first", "restart"))
    parser.add_argument("--root", type=Path, help="the data directory (every subcommand but `recall`)")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-vectors", action="store_true", help="`build` without the vector index (catalog and "
                        "text index only: what the writer's own work costs, apart from the HNSW graph)")
    parser.add_argument("--size", type=int, default=100_000, help="vectors per index for `recall`")
    args = parser.parse_args()
    if args.what == "first":
        print(json.dumps(first(args.root)))
        return
    result: dict[str, Any] = {"machine": f"{platform.node()}, {psutil.cpu_count()} cores, shared with other sessions",
                              "load": list(psutil.getloadavg())}
    if args.what == "build":
        result |= build(args.root, args.items, not args.no_vectors)
    elif args.what == "query":
        result |= query(args.root, args.queries)
    elif args.what == "recall":
        result |= recall(args.size, args.queries)
    else:
        result |= restart(args.root)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
