"""What each model costs per image on this CPU, on stand-ins of the real architectures (random weights).

- CLIP image tower: open_clip ViT-B-32 (224 px), exported by pixdex's own exporter.
- WD14 tagger: timm ViT-B/16 at 448 px with 10,861 sigmoid outputs and NHWC/BGR input — the shape of
  SmilingWolf/wd-vit-tagger-v3 — exported to ONNX the same way.
- CLIP text tower per query (batch 1), and the CLIP-vocabulary tags: one (2,163 × 512) matrix product
  per image on the embedding computed anyway.
- RSS of this process before loading, with each session loaded, and after unloading them.

Run: `.venv/bin/python bench/model_bench.py` (needs the export extra; about 3 minutes; models are built
once into bench/out/models). Writes the "model_bench" section of docs/BENCHMARKS.md. No assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "bench" / "out" / "models"
TAGS = 10_861


def rss() -> float:
    return psutil.Process().memory_info().rss / 2**20


def build_clip() -> Path:
    final = MODELS / "clip" / "ViT-B-32__random"
    if (final / "visual" / "model.onnx").is_file():
        return final
    from pixdex.indexer.export import export_clip, import_open_clip, staged_dir

    open_clip = import_open_clip()
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with staged_dir(final) as stage:
        export_clip(model, open_clip.get_model_config("ViT-B-32"), stage)
    return final


def build_wd14() -> Path:
    """timm's ViT-B/16 at 448 px, NHWC BGR 0–255 in, sigmoid scores out: the WD14 v3 ViT's shape."""
    path = MODELS / "tagger" / "wd-vit-448__random" / "model.onnx"
    if path.is_file():
        return path
    import torch

    from pixdex.indexer.export import import_open_clip

    import_open_clip()  # its torchvision workaround lets timm import
    import timm

    net = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=448, num_classes=TAGS).eval()

    class Wd14(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = image.flip(-1).permute(0, 3, 1, 2) / 127.5 - 1.0
            return torch.sigmoid(self.net(x))

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(Wd14().eval(), (torch.zeros(1, 448, 448, 3),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def per_image(run: object, batch: np.ndarray, repeats: int) -> float:
    run(batch)  # type: ignore[operator]  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / len(batch) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--build", action="store_true", help="only build the stand-in models")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.build:
        build_clip()
        build_wd14()
        return
    import subprocess
    import sys

    # torch builds the models in a process of its own: the RSS figures below are of a process that never
    # imported it, as pixdex's model worker never does.
    subprocess.run([sys.executable, __file__, "--build"], check=True)
    clip_dir, wd14 = build_clip(), build_wd14()
    assert "torch" not in sys.modules

    from pixdex.indexer.cliptags import parse_vocabulary, shipped_vocabulary
    from pixdex.indexer.embedder import ClipModel
    from pixdex.indexer.modelcache import ModelCache
    from pixdex.indexer.session import OnnxSession

    memory = {"before loading": rss()}
    rng = np.random.default_rng(0)
    now = [0.0]
    cache = ModelCache(ttl=120.0, clock=lambda: now[0])  # the default idle TTL, on a clock this script moves
    clip = ClipModel(clip_dir, 0, cache)
    images = rng.standard_normal((8, 3, 224, 224)).astype(np.float32)
    clip_ms = per_image(clip.embed_images, images, args.repeats)
    memory["CLIP image tower loaded"] = rss()
    text_ms = per_image(lambda texts: clip.embed_texts(list(texts)), np.array(["a dog on the beach"]), args.repeats * 4)
    memory["+ CLIP text tower"] = rss()
    tagger = OnnxSession(wd14, 0, cache)
    tag_batch = rng.uniform(0, 255, (4, 448, 448, 3)).astype(np.float32)
    tag_ms = per_image(tagger.run, tag_batch, args.repeats)
    memory["+ WD14 ViT-448 tagger"] = rss()
    concepts = len(parse_vocabulary(shipped_vocabulary()))
    matrix = rng.standard_normal((concepts, clip.dim)).astype(np.float32)
    embeddings = rng.standard_normal((256, clip.dim)).astype(np.float32)
    vocab_ms = per_image(lambda e: e @ matrix.T, embeddings, args.repeats * 10)
    now[0] += 121.0
    unloaded = cache.sweep()  # the daemon's idle unload: sessions dropped, gc, malloc_trim
    memory[f"after the idle unload ({unloaded} sessions)"] = rss()

    sizes = {"CLIP image tower": (clip_dir / "visual" / "model.onnx").stat().st_size / 2**20,
             "CLIP text tower": (clip_dir / "textual" / "model.onnx").stat().st_size / 2**20,
             "WD14 ViT-448 stand-in": wd14.stat().st_size / 2**20}
    ratio = tag_ms / clip_ms
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        "## Model cost per image, on stand-ins of the real architectures",
        "",
        f"`.venv/bin/python bench/model_bench.py` — {os.cpu_count()} cores ({cpu}), no GPU, Python "
        f"{platform.python_version()}, onnxruntime on the CPU with every core (`models.threads = 0`), "
        f"{time.strftime('%Y-%m-%d')}. Random weights in the real shapes: the cost is the architecture's, "
        "whatever the weights. Median of "
        f"{args.repeats} batches after a warm-up.",
        "",
        "| model (stand-in) | input | batch | ms per image | ONNX MiB |",
        "|---|---|---:|---:|---:|",
        f"| CLIP ViT-B-32 image tower (open_clip, pixdex's exporter) | 224 px | 8 | {clip_ms:.1f} | "
        f"{sizes['CLIP image tower']:.0f} |",
        f"| WD14 ViT tagger (timm ViT-B/16, 448 px, {TAGS:,} tags — wd-vit-tagger-v3's shape) | 448 px | 4 | "
        f"{tag_ms:.1f} | {sizes['WD14 ViT-448 stand-in']:.0f} |",
        f"| CLIP text tower, one query | 77 tokens | 1 | {text_ms:.1f} | {sizes['CLIP text tower']:.0f} |",
        f"| CLIP-vocabulary tags ({concepts:,} × {matrix.shape[1]} matrix product) | the embedding | 256 | "
        f"{vocab_ms:.3f} | – |",
        "",
        f"**The WD14 ViT tagger costs {ratio:.1f}× the CLIP image tower per image** (the FLOP estimate was "
        "15–20×); the vocabulary tags cost "
        f"{vocab_ms / clip_ms * 100:.2f} % of it. Hence the defaults: on a CPU the CLIP-vocabulary tags are on "
        "and the WD14 tagger is off (`[models] tagger = \"wd-vit-tagger-v3\"` turns it on; with a GPU provider "
        "both fit).",
        "",
        "| this process | RSS (MiB) |",
        "|---|---:|",
        *[f"| {name} | {value:.0f} |" for name, value in memory.items()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from index_bench import replace_section

    replace_section(args.out, "model_bench", text)


if __name__ == "__main__":
    main()
