"""What an edit of many items at once costs: `PATCH /items` with N ids through the real daemon.

    nice .venv/bin/python bench/curation_bench.py [--images 500] [--rounds 3]

`pixdex serve` as a subprocess on temporary XDG folders with the stand-in models (tests/served.py), over a library
of N generated 160×120 JPEGs it indexed itself (each with its sidecar). Then, `--rounds` times, one `PATCH /items`
with every id, adding a keyword and setting a rating, and one removing the keyword again: the wall time of each
request, and how many catalog commits it made (the catalog's generation before and after; the writer brings the
text index up after each commit, and its manifest's generation moves with it). Prints a markdown table for
docs/BENCHMARKS.md. No timing assertions: what is seen is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from photos import scene  # noqa: E402 - the tests' generated photos and daemon (after the path above)
from served import Served, wait_for  # noqa: E402

from pixdex.daemon.client import Client  # noqa: E402
from pixdex.indexer.export import write_standin_clip, write_standin_tagger  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixdex-curation-bench-") as tmp:
        root = Path(tmp)
        models, pics = root / "models", root / "pics"
        models.mkdir()
        pics.mkdir()
        write_standin_clip(models)
        write_standin_tagger(models)
        for n in range(args.images):
            scene(n, size=(160, 120)).save(pics / f"img{n:05d}.jpg", quality=85)
        daemon = Served(root, models, [pics])
        daemon.start()
        try:
            wait_for(lambda: daemon.idle() and len(daemon.listed()) == args.images, timeout=1800, what="the library")
            ids = sorted(daemon.listed().values())
            rows = []
            for _ in range(args.rounds):
                rows.append(measure(daemon, ids, {"add_tags": ["bench keyword"], "rating": 3}))
                rows.append(measure(daemon, ids, {"remove_tags": ["bench keyword"]}))
            found = daemon.get("/search", q="rating:3", k=args.images)["hits"]
        finally:
            daemon.stop()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; {args.images} images, {args.rounds} rounds; rating:3 finds {len(found)}")
    walls = [r["wall"] for r in rows]
    print("| ids | request (median) | min | max | catalog commits per request | text index: generations it moved | "
          "ok | failed |")
    print("|---|---|---|---|---|---|---|---|")
    commits = sorted({int(r["commits"]) for r in rows})
    text = sorted({int(r["text_commits"]) for r in rows})
    print(f"| {args.images} | {statistics.median(walls):.2f} s | {min(walls):.2f} s | {max(walls):.2f} s | "
          f"{'–'.join(map(str, commits))} | {'–'.join(map(str, text))} | {rows[-1]['ok']} | {rows[-1]['failed']} |")
    print(json.dumps(rows))


def measure(daemon: Served, ids: list[int], change: dict[str, object]) -> dict[str, float | int]:
    """One PATCH /items with every id: its wall time and the commits it made."""
    before, text_before = generations(daemon)
    start = time.perf_counter()
    answer = Client(daemon.socket_path, timeout=1800).request("PATCH", "/items", body={"ids": ids, **change})
    wall = time.perf_counter() - start
    after, text_after = generations(daemon)
    return {"wall": wall, "commits": after - before, "text_commits": text_after - text_before, "ok": answer["ok"],
            "failed": answer["failed"]}


def generations(daemon: Served) -> tuple[int, int]:
    """The catalog's generation and the one the text index's manifest records (each text commit writes it)."""
    with sqlite3.connect(f"file:{daemon.data / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        catalog = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
    manifest = json.loads((daemon.data / "fulltext" / "pixdex.json").read_text())
    return catalog, int(manifest["generation"])


if __name__ == "__main__":
    main()
