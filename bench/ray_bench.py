"""`pixdex index --ray` against the local pipeline on the same cores and the same images.

    .venv/bin/python bench/ray_bench.py [--images 1000] [--clip-arch ViT-B-32] [--side 1024]

Generates JPEGs (fixed seed) twice (two folders, same bytes), exports a CLIP model with random weights through the
real export code (`--clip-arch ViT-B-32`: the full-size image tower, so inference costs what the real model costs),
then:
1. the local pipeline (`Indexer`: scan → drain, as `pixdex index` does) over the first folder;
2. Ray's start-up on this machine (`ray.init()` of a local instance, then `ray.shutdown()`), alone;
3. the Ray Data job (`run_job`, a local Ray instance on the same cores) over the second folder, then the catalog
   filled from its sidecars (the second half of `pixdex index --ray`).
Writes its section of docs/BENCHMARKS.md, with a projection for 10 nodes whose assumptions it states. Ratios within
one run; no timing assertions anywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import REPO, export_random_clip, index_once, machine, make_photo, replace_section

# Projection assumptions (stated in the output): a CPU node of 16 cores, a GPU node with one T4-class GPU.
CPU_NODE_CORES = 16
GPU_IMAGES_PER_S = 1500.0  # ViT-B-32 image tower, onnxruntime CUDA EP, fp16, batch 64 on a T4 (published figures)
UNLOADED_PER_CORE = 6.0  # whole pipeline, ViT-B-32, images/s per core: pixdex's ~12 images/s on 2 idle cores
DECODE_MS_12MP = 42.0  # draft-mode JPEG decode + resize of a 12 MP photo on one core (LIBRARY-NOTES.md, Pillow)


def make_library(folder: Path, count: int, side: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        make_photo(i, folder / f"photo_{i:04d}.jpg", (side, side * 3 // 4))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--clip-arch", default="",
                        help="open_clip architecture with random weights (default: stand-in)")
    parser.add_argument("--side", type=int, default=1024, help="width of the generated photos (4:3)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()

    import ray

    from pixdex.daemon.commands.indexing import index_folders
    from pixdex.indexer import export
    from pixdex.indexer.distributed.cluster import JobSettings
    from pixdex.indexer.distributed.job import run_job
    from pixdex.indexer.settings import config_from_dict

    work = Path(tempfile.mkdtemp(prefix="pixdex-ray-bench-"))
    models = work / "models"
    make_library(work / "local", args.images, args.side)
    shutil.copytree(work / "local", work / "ray")
    export.write_standin_tagger(models)
    clip = export_random_clip(models, args.clip_arch) if args.clip_arch else export.write_standin_clip(models).name

    def config(name: str) -> object:
        return config_from_dict({"paths": {"data_dir": str(work / f"data-{name}"), "model_dir": str(models)},
                                 "library": {"folders": [str(work / name)]},
                                 "models": {"clip": clip, "tagger": export.STANDIN_TAGGER},
                                 # Off in both runs: the first would otherwise embed the vocabulary (once per
                                 # model, minutes for a ViT-B-32 text tower) inside its timing.
                                 "clip_tags": {"enabled": False}}, dict(os.environ))

    local = index_once(config("local"), work / "local")
    local_rate = local["stats"].embedded / float(local["wall"])  # type: ignore[attr-defined, arg-type]

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count())  # a new instance, even beside another on this machine
    t1 = time.perf_counter()
    ray.shutdown()
    startup, shutdown = t1 - t0, time.perf_counter() - t1

    t0 = time.perf_counter()
    report = run_job(config("ray"), [work / "ray"], JobSettings("local"), lambda line: print(line, file=sys.stderr))
    job_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    filled = index_folders(config("ray"), [work / "ray"], progress=False)  # type: ignore[arg-type]
    fill = time.perf_counter() - t0
    ray_rate, ray_wall_rate = report.indexed / report.seconds, report.indexed / job_wall
    width, height = Image.open(next((work / "local").iterdir())).size

    per_core = ray_rate / (os.cpu_count() or 1)
    cpu_node = UNLOADED_PER_CORE * CPU_NODE_CORES
    gpu_node = min(GPU_IMAGES_PER_S, CPU_NODE_CORES * 1000 / DECODE_MS_12MP)
    lines = [
        f"## `pixdex index --ray` against the local pipeline ({report.indexed} generated {width}×{height} JPEGs)",
        "",
        f"- Machine: {machine()}; shared with other work while measured (figures move by ±20 %)",
        f"- Command: `.venv/bin/python bench/ray_bench.py --images {args.images} --side {args.side}"
        + (f" --clip-arch {args.clip_arch}`" if args.clip_arch else "`") + f" ({time.strftime('%Y-%m-%d')})",
        f"- CLIP image tower: {clip + ' (random weights, real size)' if args.clip_arch else 'stand-in (tiny, 64 px)'}; "
        "tagger: stand-in (tiny); vocabulary tags off in both runs. Ray: a local instance on the same cores, defaults "
        f"(--ray-actors {report.settings.actors}, --ray-batch-size {report.settings.batch_size}).",
        "",
        "| path | seconds | images/s | ratio to local |",
        "|---|---:|---:|---:|",
        f"| local pipeline (`Indexer` scan → drain) | {float(local['wall']):.1f} | {local_rate:.2f} | 1.00 |",  # type: ignore[arg-type]
        f"| Ray Data job (dataset start → last row) | {report.seconds:.1f} | {ray_rate:.2f} | "
        f"{ray_rate / local_rate:.2f} |",
        f"| Ray job incl. walk, model load, joining Ray | {job_wall:.1f} | {ray_wall_rate:.2f} | "
        f"{ray_wall_rate / local_rate:.2f} |",
        f"| catalog filled from the sidecars afterwards | {fill:.1f} | {report.indexed / fill:.1f} | — |",
        "",
        f"Ray's own start-up here: `ray.init()` of a local instance {startup:.1f} s, `ray.shutdown()` "
        f"{shutdown:.1f} s. "
        f"The fill took {filled['from_sidecars']} embeddings from sidecars with {filled['inference_calls']} model "
        f"call(s) and {filled['decoded']} decode(s): it reads and hashes each file, it does not decode it.",
        "",
        "### Projection to 10 nodes (paper figures, not measured)",
        "",
        f"Assumptions: the job scales with cores at {UNLOADED_PER_CORE:g} images/s per core for the whole pipeline "
        f"with ViT-B-32 (pixdex's ~12 images/s on these two cores when they are idle; this run, sharing them, "
        f"measured {per_core:.1f}); a CPU node has {CPU_NODE_CORES} cores → **{cpu_node:.0f} images/s per CPU "
        "node**. A GPU node "
        f"(one T4-class GPU, onnxruntime's CUDA provider, fp16) embeds ViT-B-32 at ~{GPU_IMAGES_PER_S:.0f} images/s "
        f"(published onnxruntime/TensorRT figures, an assumption), so its {CPU_NODE_CORES} cores decoding 12 MP JPEGs "
        f"at {DECODE_MS_12MP:.0f} ms each bound it → **{gpu_node:.0f} images/s per GPU node**. Shared storage must "
        f"deliver ~3 MB per image: {cpu_node * 10 * 3:.0f} MB/s (CPU) or {gpu_node * 10 * 3:.0f} MB/s (GPU) "
        "for 10 nodes. ViT-L-14 costs ~6× ViT-B-32 per image on CPU nodes.",
        "",
        "| 10 nodes | 10 M images | 100 M images |",
        "|---|---:|---:|",
        f"| CPU ({CPU_NODE_CORES} cores each) | {1e7 / (10 * cpu_node) / 3600:.1f} h | "
        f"{1e8 / (10 * cpu_node) / 3600:.0f} h |",
        f"| GPU (one T4-class each) | {1e7 / (10 * gpu_node) / 3600:.1f} h | {1e8 / (10 * gpu_node) / 3600:.0f} h |",
        "",
    ]
    text = "\n".join(lines)
    replace_section(args.out, "ray_bench", text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
