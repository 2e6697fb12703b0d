"""What a sidecar write costs, and what the RDF-graph faithfulness check adds to it.

    .venv/bin/python bench/sidecar_bench.py [--images 200]

Generated JPEGs in a temp folder; each is given a sidecar (create: seeded from the image, with a 512-d
embedding), then rewritten twice with other keywords: once as pixdex does it, once with the graph check
switched off (to measure its share). One process, one thread, as in a decode worker. Prints a markdown
table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixdex.indexer.sidecars import graph as xmpgraph
from pixdex.indexer.sidecars import merge as sidecar


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pixdex-sidecar-bench-"))
    try:
        rng = np.random.default_rng(0)
        images = []
        for n in range(args.images):
            path = folder / f"img_{n:04d}.jpg"
            Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(path)
            images.append(path)
        vector = rng.random(512).astype(np.float32)

        def run(tags: list[str]) -> float:
            start = time.perf_counter()
            for n, path in enumerate(images):
                sidecar.write_tags(path, tags, "pixdex", "bench-model", embedding=("bench-clip", f"h{n}", vector))
            return (time.perf_counter() - start) / len(images) * 1000

        create = run(["dog", "cat", "tree"])
        modify = run(["dog", "bird"])
        real = xmpgraph.changed_triples
        xmpgraph.changed_triples = lambda *a, **k: []  # type: ignore[assignment]
        try:
            unchecked = run(["dog", "fish"])
        finally:
            xmpgraph.changed_triples = real  # type: ignore[assignment]
        unchanged = run(["dog", "fish"])  # nothing to write: read and compare only
        size = sum(p.with_name(p.name + ".xmp").stat().st_size for p in images) / len(images)
        print(f"machine: {platform.machine()}, {platform.python_version()}, {args.images} images, "
              f"sidecar ≈ {size / 1024:.1f} KB")
        print("| per sidecar | ms |\n|---|---|")
        for label, value in (("create (seeded from the image, embedding included)", create),
                             ("rewrite with other keywords", modify),
                             ("rewrite, RDF-graph check switched off", unchecked),
                             ("merge that changes nothing (no write)", unchanged)):
            print(f"| {label} | {value:.2f} |")
        print(f"\nthe graph check is {modify / unchecked:.1f}× the cost of a rewrite without it")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
