"""Indexing throughput on 12-megapixel JPEGs, split by pipeline stage.

    .venv/bin/python bench/index_bench.py [--images 24] [--clip-arch ViT-B-32]

Generates JPEGs (fixed seed), exports a CLIP model with random weights through the real export
code (the stand-in by default; ``--clip-arch ViT-B-32`` gives a full-size image tower, so the
inference figure is the real cost of that architecture), indexes them twice through the indexing
core (`Indexer`: scan → drain, as `pixdex index` does; the second run over the unchanged tree) and
writes the figures to its section of docs/BENCHMARKS.md. Ratios within one run, no timing
assertions anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
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
    """`nproc`, `lscpu`'s model name, RAM and Python, as the benchmark pages report them."""
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
               platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2**20
    return (f"{nproc} cores (`nproc`), {cpu} (`lscpu` model name), {mem:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()}")


HEADER = """# Benchmarks

Figures from the scripts in `bench/`, each measured on one machine in one run; ratios are taken within
that run. There are no timing assertions anywhere: re-run a script after changing what it measures and
it replaces its own section below.
"""


def replace_section(path: Path, name: str, text: str) -> None:
    """Put `text` between this script's markers in `path`, keeping the other sections."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if ": begin -->" not in old:
        old = HEADER  # a page from before the sections had markers: its figures are replaced
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = old.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def export_random_clip(models: Path, arch: str) -> str:
    from pixdex.indexer import export

    open_clip = export.import_open_clip()
    model, _, _ = open_clip.create_model_and_transforms(arch)
    name = f"{arch}__random"
    with export.staged_dir(models / "clip" / name) as stage:
        export.export_clip(model, open_clip.get_model_config(arch), stage)
    return name


def index_once(config: object, pics: Path) -> dict[str, object]:
    """Open the indexing core, scan → drain, close; the seconds of each step and the pipeline's stats."""
    from pixdex.indexer.core import Indexer

    t0 = time.perf_counter()
    indexer = Indexer(config)  # type: ignore[arg-type]
    t1 = time.perf_counter()
    try:
        report = indexer.scan([pics])
        t2 = time.perf_counter()
        indexer.drain(poll=0.01)
        t3 = time.perf_counter()
    finally:
        indexer.close()
    t4 = time.perf_counter()
    return {"open": t1 - t0, "scan": t2 - t1, "drain": t3 - t2, "close": t4 - t3, "wall": t3 - t1,
            "queued": report.queued, "stats": indexer.stats}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--clip-arch", default="",
                        help="open_clip architecture with random weights (default: stand-in)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()

    from pixdex.indexer import export
    from pixdex.indexer.settings import config_from_dict

    work = Path(tempfile.mkdtemp(prefix="pixdex-bench-"))
    pics, models = work / "pics", work / "models"
    pics.mkdir()
    start = time.perf_counter()
    for i in range(args.images):
        make_photo(i, pics / f"photo_{i:03d}.jpg")
    made = time.perf_counter() - start
    megabytes = sum(p.stat().st_size for p in pics.iterdir()) / 2**20
    export.write_standin_tagger(models)
    clip_name = export_random_clip(models, args.clip_arch) if args.clip_arch else export.write_standin_clip(models).name
    config = config_from_dict({"paths": {"data_dir": str(work / "data"), "model_dir": str(models)},
                               "models": {"clip": clip_name, "tagger": export.STANDIN_TAGGER}}, dict(os.environ))
    first, second = index_once(config, pics), index_once(config, pics)
    stats, wall = first["stats"], float(first["wall"])  # type: ignore[arg-type]
    n = stats.embedded  # type: ignore[attr-defined]
    rows = sorted(stats.seconds.items(), key=lambda kv: -kv[1])  # type: ignore[attr-defined]
    lines = [
        f"## Indexing {n} generated 12-megapixel JPEGs (4000×3000, {megabytes / max(n, 1):.1f} MB each)",
        "",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python bench/index_bench.py --images {args.images}"
        + (f" --clip-arch {args.clip_arch}`" if args.clip_arch else "`") + f" ({time.strftime('%Y-%m-%d')})",
        "- CLIP image tower: "
        + (f"{clip_name} (random weights, real size)" if args.clip_arch else "stand-in (tiny, 64 px)")
        + "; tagger: stand-in (tiny, 64 px). A real WD14 tagger at 448 px costs far more than either.",
        f"- Decode workers: {config.decode.workers} processes, batch size {config.models.batch_size}, "
        f"ONNX Runtime threads: {config.models.threads or 'all cores'}; "
        "through `Indexer` (`pixdex index` = scan → drain)",
        "",
        f"First run: **{n / wall:.2f} images/s** ({wall:.2f} s from scan to drained for {n} images). Opening the "
        f"indexer (lock, model worker process loading both models, stores, writer, decode processes) took "
        f"{first['open']:.2f} s and closing it {first['close']:.2f} s, not counted above.",
        "",
        "| stage | seconds | share of wall | per image (ms) |",
        "|---|---:|---:|---:|",
    ]
    for stage, secs in rows:
        lines.append(f"| {stage} | {secs:.2f} | {secs / wall:.0%} | {1000 * secs / max(n, 1):.1f} |")
    lines += [
        "",
        "Each stage is a thread and they overlap, so the shares do not add up to the wall time. `decode wait`",
        "is the time the decode stage waited for results from the decoding processes (file read, hash,",
        "draft-mode JPEG decode, EXIF orientation, both models' preprocessing), not their CPU time; `infer`",
        "is the round trip to the model worker process; `sidecar` the XMP writes in the decoding processes.",
        "",
        f"Second run over the unchanged tree: {float(second['wall']):.3f} s from scan to drained "  # type: ignore[arg-type]
        f"({second['queued']} queued, {second['stats'].decoded} images decoded, "  # type: ignore[attr-defined]
        f"{second['stats'].inference_calls} inference calls) — "  # type: ignore[attr-defined]
        f"{wall / max(float(second['wall']), 1e-9):.0f}× faster than the first; opening the indexer "  # type: ignore[arg-type]
        f"took {second['open']:.2f} s.",
        "",
        f"(Generating the {n} JPEGs took {made:.1f} s and is not counted.)",
        "",
    ]
    text = "\n".join(lines)
    replace_section(args.out, "index_bench", text)
    print(text)
    print(json.dumps({"first": stats.seconds, "wall": wall}), file=sys.stderr)  # type: ignore[attr-defined]
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
