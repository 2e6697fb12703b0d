"""What reading text in images costs and how well it reads (`[ocr]`, RapidOCR's PP-OCRv6 small models).

    .venv/bin/pip install -e '.[bench]'    # levenshtein (the error rate), scikit-image (its sample photos)
    nice .venv/bin/python bench/ocr_bench.py [--quick] [--json out.json]

- accuracy: the character error rate (edit distance / reference length, case kept, spaces collapsed; the lines
  in their order or in reverse, whichever is better) of lines of random dictionary words rendered with Pillow on
  a page, by font size and by rotation (DejaVu Sans and Liberation Serif, seeded);
- cost: CPU milliseconds per image (this process; onnxruntime on one thread, as the OCR worker runs it; the
  decode included) for photos without text (scikit-image's sample photos, which ship in its wheel —
  `pip install scikit-image` — scaled to 4000 px JPEGs; graded noise without it), screenshots (1280 × 800,
  1920 × 1080) and document pages (A4 at 150 dpi), at the default settings and at other `max_side`s;
- acceptance: the words of the end-to-end acceptance library (tests/test_ocr_places.py: a page, a screenshot,
  signs on photos, a page turned a quarter) found in the text read from their image;
- `--breakdown`: where a text-heavy image's CPU time goes — detection, the direction classifier, recognition (per
  line) — and the recogniser's cost per line at batch sizes 1, 6 and 16 (the current engine only);
- `--engine FILE`: the same measures with another version of `indexer/ocr/engine.py` (before and after a change:
  `git show REV:indexer/ocr/engine.py > /tmp/engine_before.py`), loaded in its place;
- indexing: the time `Indexer.scan` + `drain` takes on a small library (stand-in models) with the OCR stage on
  and off, alternated (it waits for an idle pipeline and runs at SCHED_IDLE, so it should cost indexing next
  to nothing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from rendered import page, screenshot  # noqa: E402

from pixdex.indexer.ocr.engine import OcrSpec, read_text  # noqa: E402
from pixdex.indexer.sections import OcrSettings  # noqa: E402

VOCABULARY = ROOT / "indexer" / "vocabulary.txt"  # the CLIP-tag vocabulary: English words, with capitals added


def vocabulary(rng: random.Random) -> list[str]:
    words = [w for line in VOCABULARY.read_text().splitlines() if not line.startswith("#") for w in line.split()
             if w.isalpha() and w.isascii() and 3 <= len(w) <= 12]
    return [w.capitalize() if rng.random() < 0.2 else w for w in sorted(set(words))]


def cer(reference: str, read: str) -> float:
    import Levenshtein

    ref, hyp = " ".join(reference.split()), " ".join(read.split())
    return Levenshtein.distance(ref, hyp) / max(1, len(ref))


def accuracy(spec: OcrSpec, quick: bool, tmp: Path) -> dict[str, Any]:
    rng = random.Random(20)
    words = vocabulary(rng)
    sizes = (12, 16, 20, 28, 40) if quick else (10, 12, 14, 16, 20, 28, 40, 56)
    turns = (0, 3, 8, 90, 270) if quick else (0, 2, 5, 8, 15, 30, 90, 180, 270)
    pages = 1 if quick else 2

    def measure(size: int, turn: float) -> float:
        errors, total = 0.0, 0
        for n in range(pages):
            lines = [" ".join(rng.choice(words) for _ in range(5)) for _ in range(6)]
            image = page(lines, size=size, rotate=turn, which=n)
            path = tmp / f"page-{size}-{turn}-{n}.png"
            image.save(path)
            read = read_text(str(path).encode(), spec).text.splitlines()
            reference = " ".join(lines)
            # A page turned a quarter comes out with its lines in reverse order: the order of lines is not what
            # a search needs, so the better of the two orders counts.
            errors += min(cer(reference, " ".join(read)), cer(reference, " ".join(read[::-1]))) * len(reference)
            total += len(reference)
        return round(errors / total, 4)

    by_size = {size: measure(size, 0) for size in sizes}
    by_turn = {turn: measure(28, turn) for turn in turns}
    return {"by_font_px": by_size, "by_rotation_deg_at_28px": by_turn}


def acceptance(spec: OcrSpec, tmp: Path) -> dict[str, Any]:
    """The acceptance library's rendered words (each in one image) found in that image's reading (case aside)."""
    from test_ocr_places import WORDS, library

    (tmp / "acceptance").mkdir()
    pics = library(tmp / "acceptance")
    read = {name: read_text(str(pics / name).encode(), spec).text.casefold() for name in set(WORDS.values())}
    missed = sorted(w for w, name in WORDS.items() if w.casefold() not in read[name])
    return {"words": len(WORDS), "found": len(WORDS) - len(missed), "missed": missed}


def breakdown(spec: OcrSpec) -> dict[str, Any]:
    """CPU ms of each step of a full pass on a screenshot and a page (after a warm-up pass each)."""
    from pixdex.indexer.ocr.engine import REC_BATCH, _bgr, engine

    rng = random.Random(7)
    words = vocabulary(rng)
    lines = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(12)]
    ocr = engine(spec)
    out: dict[str, Any] = {}
    for name, image in (("screenshot 1280×800", screenshot(lines)),
                        ("page A4 150 dpi", page(lines + lines, size=24).resize((1240, 1754)))):
        image.thumbnail((spec.max_side, spec.max_side))
        img, record = ocr.preprocess_img(_bgr(image))
        ocr.recognize_txt(ocr.detect_and_crop(img, dict(record))[0])  # warm-up
        steps: dict[str, float] = {}
        start = time.process_time()
        crops, _found = ocr.detect_and_crop(img, dict(record))
        steps["detection"] = time.process_time() - start
        start = time.process_time()
        ocr.cls_and_rotate(crops)
        steps["classifier"] = time.process_time() - start
        for batch in (1, 6, 16):
            ocr.text_rec.rec_batch_num = batch
            start = time.process_time()
            ocr.recognize_txt(crops)
            steps[f"recognition, batch {batch}"] = time.process_time() - start
        ocr.text_rec.rec_batch_num = REC_BATCH
        out[name] = {"lines": len(crops), **{k: round(v * 1000) for k, v in steps.items()},
                     "recognition ms per line (batch 1)": round(steps["recognition, batch 1"] * 1000 / len(crops), 1)}
    return out


def use_engine(path: Path) -> None:
    """Measure with the engine module at `path` in place of the current one."""
    global OcrSpec, read_text
    spec = importlib.util.spec_from_file_location("engine_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    OcrSpec, read_text = module.OcrSpec, module.read_text


def photo(seed: int, size: tuple[int, int] = (4000, 3000)) -> Image.Image:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, size[1] // 4)[:, None, None]
    base = rng.integers(40, 200, 3) * (1 - t) + rng.integers(20, 160, 3) * t
    small = np.clip(base + rng.normal(0, 25, (size[1] // 4, size[0] // 4, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "motorcycle_left.png",
          "retina.jpg", "rocket.jpg", "grass.png", "gravel.png", "brick.png", "moon.png", "horse.png", "coins.png")


def real_photos(tmp: Path) -> list[Path]:
    """scikit-image's sample photos (they ship in its wheel), as 4000-pixel JPEGs like a camera's; synthetic
    ones (graded noise) without it."""
    try:
        import skimage
    except ImportError:
        paths = []
        for i in range(8):
            paths.append(tmp / f"photo-{i}.jpg")
            photo(i).save(paths[-1], quality=90)
        return paths
    data = Path(skimage.__file__).parent / "data"
    paths = []
    for name in PHOTOS:
        image = Image.open(data / name).convert("RGB")
        scale = 4000 / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        paths.append(tmp / f"{Path(name).stem}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def cost(settings: OcrSettings, quick: bool, tmp: Path) -> dict[str, Any]:
    spec = OcrSpec.of(settings, 150_000_000)
    rng = random.Random(7)
    words = vocabulary(rng)
    n = 2 if quick else 4
    sets: dict[str, list[Path]] = {"photo without text (4000 px JPEG)": real_photos(tmp), "screenshot 1280×800": [],
                                   "screenshot 1920×1080": [], "page A4 150 dpi (1240×1754)": []}
    for i in range(n):
        lines = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(12)]
        path = tmp / f"shot-{i}.png"
        screenshot(lines).save(path)
        sets["screenshot 1280×800"].append(path)
        path = tmp / f"shot-hd-{i}.png"
        screenshot(lines).resize((1920, 1080)).save(path)
        sets["screenshot 1920×1080"].append(path)
        path = tmp / f"page-{i}.png"
        page(lines + lines, size=24).resize((1240, 1754)).save(path)
        sets["page A4 150 dpi (1240×1754)"].append(path)
    read_text(str(sets["screenshot 1280×800"][0]).encode(), spec)  # the sessions load once per worker: not counted
    out: dict[str, Any] = {}
    for name, paths in sets.items():
        results = [read_text(str(p).encode(), spec) for p in paths]
        out[name] = {"cpu_ms_median": float(np.median([r.cpu_ms for r in results])),
                     "cpu_ms_max": max(r.cpu_ms for r in results),
                     "full_pass": sum(r.looked for r in results), "images": len(results),
                     "with_text": sum(bool(r.text) for r in results)}
        if name.startswith("photo"):
            out[name]["each"] = {p.stem: [r.cpu_ms, r.looked, r.text[:40]] for p, r in zip(paths, results, strict=True)}
    return out


def indexing(quick: bool, tmp: Path) -> dict[str, Any]:
    """scan + drain of a small library (stand-in models), OCR stage off and on."""
    from pixdex.indexer.core import Indexer
    from pixdex.indexer.export import write_standin_clip, write_standin_tagger
    from pixdex.indexer.settings import load_config

    models = tmp / "models"
    write_standin_clip(models)
    write_standin_tagger(models)
    pics = tmp / "pics"
    pics.mkdir()
    count = 24 if quick else 80
    rng = random.Random(3)
    words = vocabulary(rng)
    for i in range(count):
        if i % 8 == 0:
            screenshot([" ".join(rng.choice(words) for _ in range(5))]).save(pics / f"s{i}.png")
        else:
            photo(i, (2000, 1500)).save(pics / f"p{i}.jpg", quality=88)
    out: dict[str, Any] = {"indexing_s_ocr_off": [], "indexing_s_ocr_on": [], "open_s_ocr_off": [],
                           "open_s_ocr_on": []}
    for run, on in enumerate((False, True, True, False, False, True)):  # alternated: page cache, machine load
        data = tmp / f"data-{run}"
        config_path = tmp / f"config-{run}.toml"
        config_path.write_text(
            f'[library]\nfolders = ["{pics}"]\n[paths]\nmodel_dir = "{models}"\ndata_dir = "{data}"\n'
            '[models]\nclip = "pixdex-standin-clip"\ntagger = "pixdex-standin-tagger"\n'
            f'[sidecar]\nwrite = false\n[ocr]\nenabled = {"true" if on else "false"}\n')
        config = load_config(config_path, environ={})
        start = time.perf_counter()
        with Indexer(config, read_text=on) as indexer:
            out["open_s_ocr_" + ("on" if on else "off")].append(round(time.perf_counter() - start, 2))
            start = time.perf_counter()
            indexer.scan([pics])
            indexer.drain()
            out["indexing_s_ocr_" + ("on" if on else "off")].append(round(time.perf_counter() - start, 2))
    out["images"] = count
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-indexing", action="store_true")
    parser.add_argument("--only-indexing", action="store_true")
    parser.add_argument("--only-accuracy", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="only where the time goes (detection, ...)")
    parser.add_argument("--engine", type=Path, help="measure this copy of indexer/ocr/engine.py instead")
    parser.add_argument("--sides", type=int, nargs="*", help="the max_side values to cost (default 960 1280 1600)")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if args.engine:
        use_engine(args.engine)
    if args.breakdown:
        result["breakdown"] = breakdown(OcrSpec.of(OcrSettings(), 150_000_000))
        print(json.dumps(result["breakdown"], indent=1, ensure_ascii=False), flush=True)
        args.only_accuracy = args.skip_accuracy = True  # nothing else
    with tempfile.TemporaryDirectory(prefix="pixdex-ocr-bench-") as name:
        tmp = Path(name)
        if not args.only_indexing and not args.skip_accuracy:
            result["accuracy"] = accuracy(OcrSpec.of(OcrSettings(), 150_000_000), args.quick, tmp)
            print(json.dumps(result["accuracy"], indent=1), flush=True)
            result["acceptance"] = acceptance(OcrSpec.of(OcrSettings(), 150_000_000), tmp)
            print(json.dumps(result["acceptance"]), flush=True)
        sides = () if args.only_indexing or args.only_accuracy else \
            args.sides or ((960, 1280) if args.quick else (960, 1280, 1600))
        for side in sides:
            result[f"cost_max_side_{side}"] = cost(OcrSettings(max_side=side), args.quick, tmp)
            print(side, json.dumps(result[f"cost_max_side_{side}"], indent=1), flush=True)
        if not args.skip_indexing and not args.only_accuracy:
            result["indexing"] = indexing(args.quick, tmp)
            print(json.dumps(result["indexing"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
