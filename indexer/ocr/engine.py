"""Reading the text in one image with RapidOCR (PP-OCRv6 small detection and recognition, the text-direction
classifier; Apache-2.0; the models ship inside the rapidocr wheel, so nothing is downloaded), in the OCR
worker process.

Most photos hold no text, and a full detection pass at 1280 px costs most of a second of CPU. So the
detector looks first at a copy `gate_side` pixels on its long side (about 40 ms); only when it finds a line
does it run again on the copy at `max_side`, and the recogniser then reads just the boxes it found (at most
`max_lines`). Small print vanishes from that copy: a page (nearly all one flat colour) skips the look and gets
the full pass, and an image with large flat areas — a screenshot, a slide — is looked at on a copy half as large
again (`has_text`).
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
UNSURE = 0.9  # a reading's mean score below this: the image turned half a turn is read too (`read_lines`)
PAGE, FLAT = 0.9, 0.3  # `flat_share` of a page (always read), of an image with large flat areas (a larger look)


@dataclass(frozen=True)
class OcrSpec:
    """What one read depends on (the settings a worker needs, and the decoder's limit)."""

    max_side: int
    min_confidence: float
    gate_side: int
    max_lines: int
    max_pixels: int

    @classmethod
    def of(cls, settings: OcrSettings, max_pixels: int) -> OcrSpec:
        return cls(settings.max_side, settings.min_confidence, settings.gate_side, settings.max_lines, max_pixels)


@dataclass(frozen=True)
class TextRead:
    """The text read in one image: its lines top to bottom, one per line of `text`."""

    text: str
    lines: int
    digest: str  # the content hash of the bytes read
    cpu_ms: float  # CPU time this process spent on it (decode included)
    looked: bool  # whether the full pass ran (the small look found a line)


_ENGINES: dict[tuple[int, int], Any] = {}  # one per process and (max_side, max_lines): the sessions load once


def engine(max_side: int, max_lines: int) -> Any:
    """RapidOCR with its shipped models, one onnxruntime thread (it runs at background priority), quiet."""
    key = (max_side, max_lines)
    if key not in _ENGINES:
        from rapidocr import RapidOCR  # late: opencv and the sessions load in the OCR worker only

        _ENGINES[key] = RapidOCR(params={
            "Global.log_level": "critical", "Global.max_side_len": max(max_side, 64),
            "Det.limit_side_len": max_side, "Det.limit_type": "max", "Det.max_candidates": max_lines,
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
    lines = read_lines(image, spec, turn=flat >= FLAT)
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
    found = engine(spec.max_side, spec.max_lines)(_bgr(small), use_det=True, use_cls=False, use_rec=False)
    return found.boxes is not None and len(found.boxes) > 0


def read_lines(image: Image.Image, spec: OcrSpec, turn: bool = True) -> list[str]:
    """The lines read in an RGB image at most `max_side` on its long side: detection, direction, recognition.
    With `turn` (pages, screenshots: scans come upside down, photos rarely), a reading the recogniser is unsure
    of (mean score below `UNSURE`) may be of a page upside down, or turned a quarter the way RapidOCR turns tall
    lines wrongly: the image turned half a turn is read too, and the reading with the higher total score is kept."""
    lines, scores = _pass(image, spec)
    if turn and lines and sum(scores) / len(scores) < UNSURE:
        turned, turned_scores = _pass(image.rotate(180), spec)
        if sum(turned_scores) > sum(scores):
            lines = turned
    return lines


def _pass(image: Image.Image, spec: OcrSpec) -> tuple[list[str], list[float]]:
    result = engine(spec.max_side, spec.max_lines)(_bgr(image), use_det=True, use_cls=True, use_rec=True,
                                                   text_score=spec.min_confidence)
    read = [(" ".join(str(t).split()), float(c)) for t, c in zip(result.txts or (), result.scores or (), strict=False)
            if worth_keeping(str(t))]
    return [t for t, _ in read], [c for _, c in read]


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
