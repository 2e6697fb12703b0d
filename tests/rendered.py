"""Images with text rendered into them (Pillow and the DejaVu/Liberation fonts Debian ships), for the OCR tests
and bench/ocr_bench.py: a document page, a screenshot, a sign on a photo; any of them rotated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONTS = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
         Path("/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf"),
         Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")]


def font(size: int, which: int = 0) -> ImageFont.FreeTypeFont:
    found = [f for f in FONTS if f.exists()]
    return ImageFont.truetype(str(found[which % len(found)]), size)


def page(lines: list[str], size: int = 28, rotate: float = 0.0, which: int = 0) -> Image.Image:
    """A white A4-shaped page (1000 × 1400, wider when a line needs it) with `lines` of text at `size` px, turned
    `rotate` degrees."""
    width = max([1000, *(int(font(size, which).getlength(line)) + 160 for line in lines)])
    image = Image.new("RGB", (width, max(1400, int(width * 1.4))), (250, 250, 247))
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((80, 100 + n * int(size * 1.8)), line, fill=(20, 20, 20), font=font(size, which))
    return _turned(image, rotate, (250, 250, 247))


def screenshot(lines: list[str], size: int = 18, which: int = 0) -> Image.Image:
    """A 1280 × 800 window: a title bar, a side panel, text in the main pane."""
    image = Image.new("RGB", (1280, 800), (236, 236, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1280, 40), fill=(48, 52, 64))
    draw.text((16, 10), "Settings", fill=(240, 240, 240), font=font(18, which))
    draw.rectangle((0, 40, 240, 800), fill=(222, 224, 230))
    for n, item in enumerate(("General", "Network", "Display")):
        draw.text((20, 70 + n * 36), item, fill=(40, 40, 40), font=font(16, which))
    for n, line in enumerate(lines):
        draw.text((280, 80 + n * int(size * 2.2)), line, fill=(30, 30, 30), font=font(size, which))
    return image


def sign(words: str, seed: int, size: int = 56, rotate: float = 0.0, which: int = 2) -> Image.Image:
    """A photo-like 1200 × 800 scene (a sky-to-ground gradient with noise) with a sign holding `words`, the sign
    turned `rotate` degrees."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 800)[:, None, None]
    sky, ground = rng.integers(90, 200, 3), rng.integers(30, 120, 3)
    scene = (sky * (1 - t) + ground * t) + rng.normal(0, 12, (800, 1200, 3))
    image = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    board = Image.new("RGBA", (int(len(words) * size * 0.75) + 80, int(size * 2.2)), (24, 96, 48, 255))
    ImageDraw.Draw(board).text((40, int(size * 0.5)), words, fill=(245, 245, 245, 255), font=font(size, which))
    board = board.rotate(rotate, expand=True, resample=Image.Resampling.BICUBIC)  # the corners stay transparent
    image.paste(board, ((1200 - board.width) // 2, 200), board)
    return image


def _turned(image: Image.Image, degrees: float, fill: tuple[int, int, int]) -> Image.Image:
    if not degrees:
        return image
    return image.rotate(degrees, expand=True, fillcolor=fill, resample=Image.Resampling.BICUBIC)
