"""Reading the text in one image with RapidOCR (PP-OCRv6 small detection and recognition, the text-direction
classifier; Apache-2.0; the models ship inside the rapidocr wheel, so nothing is downloaded), in the OCR
worker process.

Most photos hold no text, and a full detection pass at 1280 px costs most of a second of CPU. So the
detector looks first at a copy `gate_side` pixels on its long side (about 40 ms); only when it finds a line
does it run again — on a photo, on a copy at `detect_side` (the lines it finds are cut from the copy at
`max_side`, where print is sharper); on a page or a screenshot, where print is small, at `max_side` — and the
recogniser then reads just the boxes it found (at most `max_lines`, one at a time: a batch pads each line to
its widest). Small print vanishes from the look's copy: a page (nearly all one flat colour) skips the look and gets
the full pass, and an image with large flat areas — a screenshot, a slide — is looked at on a copy half as large
again (`has_text`). Where the time goes (measured, docs/BENCHMARKS.md): the recogniser, about 1.5 ms of CPU per
character read; detection is a quarter to a third of a text-heavy image's cost.

Which way up: the text-direction classifier votes on every line found (`upside_down`); when most say the page
is upside down, every line is turned half a turn. RapidOCR turns a tall line a quarter turn one way, so a page
turned a quarter either way becomes upright or upside down, and the vote settles which.
Lines the recogniser is less sure of than `min_confidence` are left out.

The recognition model reads Chinese (simplified and traditional), Japanese, English and the Latin-script
languages PaddleOCR lists for PP-OCRv6 in one model: there is no language to choose.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pixdex.indexer.captured import Captured
from pixdex.indexer.decode import decode_image
from pixdex.indexer.digest import content_hash
from pixdex.indexer.errors import ReadError
from pixdex.indexer.files import read_regular
from pixdex.indexer.sections import OcrSettings

TOO_SMALL = 8  # pixels: no line of text fits in fewer
# Lines per recogniser run: one. A batch pads every line to its widest, and on one thread batching saves nothing
# (measured, `bench/ocr_bench.py --breakdown`: a screenshot's 16 lines cost 1.0 s of CPU one at a time, 1.4 s six
# to a batch — RapidOCR's default — and 2.5 s sixteen).
REC_BATCH = 1
PAGE, FLAT = 0.9, 0.3  # `flat_share` of a page (always read), of an image with large flat areas (a larger look)


@dataclass(frozen=True)
class OcrSpec:
    """What one read depends on (the settings a worker needs, and the decoder's limit)."""

    max_side: int
    min_confidence: float
    gate_side: int
    max_lines: int
    max_pixels: int
    detect_side: int = 960

    @classmethod
    def of(cls, settings: OcrSettings, max_pixels: int) -> OcrSpec:
        return cls(settings.max_side, settings.min_confidence, settings.gate_side, settings.max_lines, max_pixels,
                   min(settings.detect_side, settings.max_side))


@dataclass(frozen=True)
class TextRead:
    """The text read in one image: its lines top to bottom, one per line of `text`."""

    text: str
    lines: int
    digest: str  # the content hash of the bytes read
    cpu_ms: float  # CPU time this process spent on it (decode included)
    looked: bool  # whether the full pass ran (the small look found a line)


_ENGINES: dict[tuple[int, int], Any] = {}  # one per process and spec: the sessions load once


def engine(spec: OcrSpec) -> Any:
    """RapidOCR with its shipped models, quiet, its sessions on one onnxruntime thread each: the worker runs at
    background priority on one core, and with one thread there is no pool to spin."""
    key = (spec.max_side, spec.max_lines)
    if key not in _ENGINES:
        from rapidocr import RapidOCR  # late: opencv and the sessions load in the OCR worker only

        _ENGINES[key] = RapidOCR(params={
            "Global.log_level": "critical", "Global.max_side_len": max(spec.max_side, 64),
            "Det.limit_side_len": spec.max_side, "Det.limit_type": "max", "Det.max_candidates": spec.max_lines,
            "Rec.rec_batch_num": REC_BATCH,
            "EngineConfig.onnxruntime.intra_op_num_threads": 1, "EngineConfig.onnxruntime.inter_op_num_threads": 1})
    return _ENGINES[key]


def read_text(path: bytes, spec: OcrSpec) -> TextRead:
    """The text in the image at `path`. Raises ReadError (the file's reason) when it cannot be read or decoded;
    an image without text, blank or too small for any, gives empty text."""
    start = time.process_time()
    name = os.fsdecode(path)
    try:
        data, _st = read_regular(path)
    except OSError as exc:
        raise ReadError(name, f"cannot read: {exc.strerror or exc}") from None
    digest = content_hash(data)
    with Captured():  # a JPEG decodes at a fraction of its size (draft) for the look: most end there
        small = decode_image(data, name, spec.gate_side * 3 // 2, spec.max_pixels).image
    if min(small.size) < TOO_SMALL:
        return TextRead("", 0, digest, _ms(start), looked=False)
    look = small.copy()
    look.thumbnail((spec.gate_side, spec.gate_side), Image.Resampling.BILINEAR)
    flat = flat_share(look)
    if not has_text(small, flat, spec):
        return TextRead("", 0, digest, _ms(start), looked=False)
    with Captured():
        image = decode_image(data, name, spec.max_side, spec.max_pixels).image
    image.thumbnail((spec.max_side, spec.max_side), Image.Resampling.BILINEAR)
    lines = read_lines(image, spec, spec.max_side if flat >= FLAT else spec.detect_side)
    return TextRead("\n".join(lines), len(lines), digest, _ms(start), looked=True)


def has_text(image: Image.Image, flat: float, spec: OcrSpec) -> bool:
    """The cheap look: does the detector find a line on a small copy? A page (`flat`, its `flat_share`, at least
    `PAGE`) is taken to have text; an image with large flat areas (a screenshot, a slide, a photo with a plain
    background) is looked at on a copy half as large again, where a screenshot's small print still shows."""
    small = image.copy()
    small.thumbnail((spec.gate_side, spec.gate_side), Image.Resampling.BILINEAR)
    if flat >= PAGE:
        return True
    if flat >= FLAT:
        small = image.copy()
        small.thumbnail((spec.gate_side * 3 // 2, spec.gate_side * 3 // 2), Image.Resampling.BILINEAR)
    found = engine(spec)(_bgr(small), use_det=True, use_cls=False, use_rec=False)
    return found.boxes is not None and len(found.boxes) > 0


def read_lines(image: Image.Image, spec: OcrSpec, detect_side: int | None = None) -> list[str]:
    """The lines read in an RGB image at most `max_side` on its long side, in reading order: detection (on a copy
    at most `detect_side`, `max_side` without it), the lines cut out, turned the way the classifier's vote says
    (`upside_down`), recognised; those read with less than `min_confidence` or not `worth_keeping` left out."""
    from rapidocr.main import RapidOCRError

    ocr = engine(spec)
    ocr._load_det_model().limit_side_len = detect_side or spec.max_side  # the detector's copy, this call's
    img, record = ocr.preprocess_img(_bgr(image))
    try:
        crops, found = ocr.detect_and_crop(img, record)
    except RapidOCRError:  # no line found
        return []
    turn = upside_down(ocr, crops)
    if turn:
        crops = [np.ascontiguousarray(np.rot90(crop, 2)) for crop in crops]
    crops = [crops[i] for i in reading_order(np.asarray(found.boxes, dtype=np.float32), turn)]
    read = ocr.recognize_txt(crops)
    return [line for text, score in zip(read.txts or (), read.scores or (), strict=False)
            if float(score) >= spec.min_confidence and worth_keeping(line := " ".join(str(text).split()))]


def upside_down(ocr: Any, crops: list[np.ndarray[Any, Any]]) -> bool:
    """Whether the text-direction classifier, over all the lines cut out, says half a turn more than upright
    (each vote weighed by its confidence). One vote for the image, not one per line: the classifier errs on a
    line in ten or so (more on small print), and an image's lines are nearly always the same way up."""
    _turned, found = ocr.cls_and_rotate(crops)
    return sum(float(score) * (1 if "180" in str(label) else -1) for label, score in found.cls_res) > 0


def reading_order(boxes: np.ndarray[Any, Any], turned: bool) -> list[int]:
    """The order to read the lines in, from their boxes (four corners each, as the detector sorted them: top to
    bottom, left to right) and the vote: as they are on an upright page, the other way round on one upside down;
    a page of tall lines (turned a quarter; RapidOCR turns each tall line a quarter turn to the left) from the
    right when its lines came out upright, else from the left."""
    wide = np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1)
    high = np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1)
    if np.count_nonzero(high >= wide * 1.5) * 2 <= len(boxes):
        return list(range(len(boxes)))[::-1 if turned else 1]
    x = boxes.mean(axis=1)[:, 0]
    return [int(i) for i in np.argsort(x if turned else -x, kind="stable")]


def worth_keeping(line: str) -> bool:
    """A line is kept when it holds two letters or digits, or one of a script written a word a character (CJK): a
    lone "1", "i" or "C" is what the detector makes of a photo's texture (found by a trial: plain photos got
    them, and then matched queries by them)."""
    signs = [ch for ch in line if ch.isalnum()]
    return len(signs) >= 2 or any(not ch.isascii() for ch in signs)


def flat_share(image: Image.Image) -> float:
    """The share of the pixels within ±2 grey levels of the commonest: pages are nearly all paper, screenshots
    mostly background; a photo's grain spreads its tones."""
    gray = np.asarray(image.convert("L"))
    counts = np.bincount(gray.ravel(), minlength=256)
    peak = int(counts.argmax())
    return float(counts[max(0, peak - 2):peak + 3].sum() / gray.size)


def _bgr(image: Image.Image) -> np.ndarray[Any, Any]:
    """OpenCV's channel order, which RapidOCR takes for an array."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _ms(start: float) -> float:
    return round((time.process_time() - start) * 1000, 1)
