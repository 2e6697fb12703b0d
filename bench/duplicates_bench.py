"""What finding duplicates costs: grouping N images' perceptual hashes, and hashing one decoded image.

    .venv/bin/python bench/duplicates_bench.py [--images 100000] [--planted 1000]

N random 40-byte stored hashes (the 64-bit and the 256-bit pHash, as `indexer.catalog.phashes` keeps them), with
`--planted` near-copies flipped at a crop's distance (a sixth of the bits: ~10 of 64, ~42 of 256), grouped as
`query.duplicates.find` groups them — every pair compared on 64 bits in tiles of numpy's bitwise_count, the
candidates confirmed on 256 bits, joined into components by scipy — minus the catalog reads. Also the cost the
decode worker pays per image for the hash (`indexer.phash.perceptual_hash`) on a decoded 640×480 photo. Prints a
markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from pixdex.indexer.phash import perceptual_hash
from pixdex.query.duplicates import Limits, candidate_pairs, components, long_distances

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from photos import scene  # the tests' generated photos (after the path above)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--planted", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, planted = args.images, args.planted
    short = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64) | (rng.integers(0, 2, n).astype(np.uint64) << 63)
    long = rng.integers(0, 2**63, (n, 4), dtype=np.int64).view(np.uint64)
    for k in range(planted):  # image n-1-k is a near-copy of image k
        short[n - 1 - k] = short[k] ^ _bits(rng, 64, 10)
        long[n - 1 - k] = long[k] ^ np.array([_bits(rng, 64, 10) for _ in range(4)], dtype=np.uint64)
    limits = Limits()
    cpu = time.process_time()
    start = time.perf_counter()
    i, j = candidate_pairs(short, limits.short_bits)
    compared = time.perf_counter() - start
    bits = long_distances(long, i, j)
    keep = bits <= limits.bits
    groups = components(n, i[keep], j[keep])
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu  # every thread's: on a busy machine the wall time is mostly waiting
    found = sum(1 for g in groups if len(g) == 2 and g[0] + g[1] == n - 1)
    image = scene(1)
    perceptual_hash(image)
    runs = 50
    t = time.perf_counter()
    for _ in range(runs):
        perceptual_hash(image)
    per_image = (time.perf_counter() - t) / runs
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; numpy {np.__version__}")
    print("| images | all-pairs compare (64-bit) | candidates | confirm + group | total (wall) | CPU time | "
          "planted found | groups | hash per image (640×480) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {n:,} | {compared:.1f} s | {len(i):,} | {total - compared:.2f} s | {total:.1f} s | {cpu:.1f} s | "
          f"{found} of {planted} | {len(groups):,} | {per_image * 1000:.1f} ms |")


def _bits(rng: np.random.Generator, width: int, count: int) -> np.uint64:
    mask = 0
    for b in rng.choice(width, count, replace=False):
        mask |= 1 << int(b)
    return np.uint64(mask)


if __name__ == "__main__":
    main()
