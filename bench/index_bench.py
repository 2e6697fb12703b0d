"""Indexing throughput on 12-megapixel JPEGs, split by pipeline stage.

    .venv/bin/python bench/index_bench.py [--images 24] [--clip-arch ViT-B-32]

Generates JPEGs (fixed seed), exports a CLIP model with random weights through the real export
code (the stand-in by default; ``--clip-arch ViT-B-32`` gives a full-size image tower, so the
inference figure is the real cost of that architecture), indexes them twice (the second run
over the unchanged tree) and writes the figures to docs/BENCHMARKS.md. Ratios within one run,
no timing assertions anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent


def make_photo(seed: int, path: Path, size: tuple[int, int] = (4000, 3000)) -> None:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        r = int(rng.integers(20, 400))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    grain = rng.normal(0, 6, (size[1], size[0], 1)).astype(np.int16)
    pixels = np.clip(np.asarray(image, np.int16) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2**20
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--clip-arch", default="", help="open_clip architecture with random weights (default: stand-in)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()

    from pixdex.indexer.settings import config_from_dict
    from pixdex.daemon.library import IndexSession
    from pixdex.indexer import export

    work = Path(tempfile.mkdtemp(prefix="pixdex-bench-"))
    pics, models = work / "pics", work / "models"
    pics.mkdir()
    start = time.perf_counter()
    for i in range(args.images):
        make_photo(i, pics / f"photo_{i:03d}.jpg")
    made = time.perf_counter() - start
    megabytes = sum(p.stat().st_size for p in pics.iterdir()) / 2**20
    export.write_standin_tagger(models)
    if args.clip_arch:
        open_clip = export.import_open_clip()
        model, _, _ = open_clip.create_model_and_transforms(args.clip_arch)
        clip_name = f"{args.clip_arch}__random"
        with export.staged_dir(models / "clip" / clip_name) as stage:
            export.export_clip(model, open_clip.get_model_config(args.clip_arch), stage)
    else:
        clip_name = export.write_standin_clip(models).name
    config = config_from_dict({"paths": {"data_dir": str(work / "data"), "model_dir": str(models)},
                               "models": {"clip": clip_name, "tagger": export.STANDIN_TAGGER}}, dict(os.environ))
    runs = []
    for _ in range(2):
        with IndexSession(config) as session:
            t0 = time.perf_counter()
            stats = session.index([pics])
            runs.append((time.perf_counter() - t0, stats))
    (first_wall, first), (second_wall, second) = runs
    n = first.embedded
    rows = [(stage, secs) for stage, secs in sorted(first.seconds.items(), key=lambda kv: -kv[1])]
    lines = [
        "# Benchmarks",
        "",
        "Figures from `bench/index_bench.py`; ratios within one run, measured on one machine. Re-run it after",
        "changes to the pipeline and replace this file.",
        "",
        f"## Indexing {n} generated 12-megapixel JPEGs (4000×3000, {megabytes / max(n, 1):.1f} MB each)",
        "",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python bench/index_bench.py --images {args.images}"
        + (f" --clip-arch {args.clip_arch}`" if args.clip_arch else "`"),
        f"- CLIP image tower: {clip_name + ' (random weights, real size)' if args.clip_arch else 'stand-in (tiny, 64 px)'}"
        f"; tagger: stand-in (tiny, 64 px). A real WD14 tagger at 448 px costs far more than either.",
        f"- Decode workers: {config.decode.workers}, batch size {config.models.batch_size}, "
        f"ONNX Runtime threads: {config.models.threads or 'all cores'}",
        "",
        f"First run: **{n / first_wall:.2f} images/s** ({first_wall:.2f} s wall for {n} images).",
        "",
        "| stage | seconds | share of wall | per image (ms) |",
        "|---|---:|---:|---:|",
    ]
    for stage, secs in rows:
        lines.append(f"| {stage} | {secs:.2f} | {secs / first_wall:.0%} | {1000 * secs / max(n, 1):.1f} |")
    lines += [
        "",
        "`decode` is summed over the decode threads (file read, hash, draft-mode JPEG decode, EXIF",
        "orientation, both models' preprocessing), so it can exceed its share of wall time; the other",
        "stages run on the main thread while decoding continues ahead of them.",
        "",
        f"Second run over the unchanged tree: {second_wall:.3f} s wall, {second.decoded} images decoded, "
        f"{second.inference_calls} inference calls — {first_wall / max(second_wall, 1e-9):.0f}× faster than the first.",
        "",
        f"(Generating the {n} JPEGs took {made:.1f} s and is not counted.)",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({"first": first.seconds, "wall": first_wall}), file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
