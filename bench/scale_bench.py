"""Hybrid queries over a large synthetic library, per filter kind, encoder excluded.

    nice .venv/bin/python bench/scale_bench.py build --items 100000 --root /tmp/scale
    nice .venv/bin/python bench/scale_bench.py query --root /tmp/scale [--queries 200]

`build` feeds `--items` synthetic items (512-d random unit vectors, Zipf tags and captions: core_bench's
`synth_batch`) through the real `Writer` (core_bench's `Library`, 20,000 a commit) and reports the rate and the
bytes per item of each store. `query` runs what `SearchService.search` runs after the text tower — the vector
side under the filters (`_vector_side`), the text side (`text_hits`), RRF and the hits' catalog rows
(`_fuse`) — for words alone and words with each kind of filter, and prints p50/p99 per kind. Run `query` with
another checkout on PYTHONPATH to compare code over the same library. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_bench import SEED, Library, dir_size, query_words, synth_batch, timed, unit_vectors, vocabulary

MODEL = "bench-random-512"
NDIM = 512


def build(root: Path, items: int) -> dict[str, Any]:
    from pixdex.indexer.sections import IndexSettings

    lib = Library(root, MODEL, NDIM, IndexSettings())
    t0 = time.perf_counter()
    lib.add(SEED, 0, items)
    took = time.perf_counter() - t0
    lib.close()
    lib.lookup.close()
    data = lib.layout
    sizes = {"catalog": data.catalog.stat().st_size,
             "wal": Path(str(data.catalog) + "-wal").stat().st_size if Path(str(data.catalog) + "-wal").exists() else 0,
             "vectors": dir_size(data.root / "vectors"), "text": dir_size(data.root / "fulltext")}
    return {"items": items, "build_s": took, "items_per_s": items / took,
            "bytes_per_item": {k: v / items for k, v in sizes.items()}, "sizes": sizes}


def tag_shares(items: int, vocab: list[str]) -> Counter[str]:
    """How many items carry each tag (counted on a sample of the same generator)."""
    sample = min(items, 20_000)
    batch, _ = synth_batch(SEED, 0, sample, 4, vocab)
    counts: Counter[str] = Counter(t["name"] for b in batch for t in b["tags"])
    return Counter({t: n / sample for t, n in counts.items()})


def query(root: Path, queries: int) -> dict[str, Any]:
    from pixdex.indexer.settings import config_from_dict
    from pixdex.query.parse import Filters
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
        "folder (a year, 4%)": Filters(folders=(folder,)),
        "date range (one year, 4%)": Filters(after=datetime(2003, 1, 1), before=datetime(2004, 1, 1)),
        "date range (half the years)": Filters(after=datetime(2000, 1, 1), before=datetime(2012, 7, 1)),
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
            found = service._vector_side(space, text, vectors[n], filters)
            said = text_hits(text, words[n], filters, candidates)
            return len(service._fuse(found, said, 20))

        hits = [one(n) for n in range(3)]
        out[name] = {**timed(one, list(range(queries))), "hits": hits}
        print(f"{name}: {json.dumps(out[name])}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("build", "query"))
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": f"{platform.node()}, {psutil.cpu_count()} cores, shared with other sessions",
                              "load": list(psutil.getloadavg())}
    result |= build(args.root, args.items) if args.what == "build" else query(args.root, args.queries)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
