"""Generated photographic-looking test images (`scene`): a sky gradient over a horizon, hills, objects and
texture, each seed a different layout — so two seeds are two different photos, however alike their colours —
and the copies a photo collection accumulates of one photo (`planted_copies`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def scene(seed: int, size: tuple[int, int] = (640, 480), palette: int | None = None) -> Image.Image:
    """A landscape-like photo: layout from `seed`, colours from `palette` (default: the seed's own)."""
    layout = np.random.default_rng(seed)
    colours = np.random.default_rng(10_000 + (seed if palette is None else palette))
    w, h = size
    sky_top, sky_low, ground = (colours.integers(0, 256, 3) for _ in range(3))
    horizon = int(h * layout.uniform(0.3, 0.7))
    t = np.linspace(0, 1, h)[:, None, None]
    sky = sky_top * (1 - t) + sky_low * t
    pixels = np.broadcast_to(sky, (h, w, 3)).copy()
    xs = np.arange(w)
    ridge = horizon + sum(layout.uniform(5, 40) * np.sin(xs / w * np.pi * layout.uniform(1, 6) + layout.uniform(0, 6))
                          for _ in range(3))
    below = np.arange(h)[:, None] >= ridge[None, :]
    shade = 0.6 + 0.4 * np.linspace(0, 1, h)[:, None]
    pixels[below] = (ground[None, :] * shade[np.nonzero(below)[0]])
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(layout.integers(6, 14))):
        x, y = layout.uniform(0, w), layout.uniform(0, h)
        rx, ry = layout.uniform(w * 0.03, w * 0.22), layout.uniform(h * 0.03, h * 0.22)
        colour = tuple(int(c) for c in colours.integers(0, 256, 3))
        match int(layout.integers(0, 3)):
            case 0:
                draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=colour)
            case 1:
                draw.rectangle((x - rx, y - ry, x + rx, y + ry), fill=colour)
            case _:
                points = [(x + rx * np.cos(a), y + ry * np.sin(a)) for a in np.sort(layout.uniform(0, 2 * np.pi, 5))]
                draw.polygon(points, fill=colour)
    grain = np.random.default_rng(seed + 7).normal(0, 8, (h, w, 3))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)
    return Image.fromarray(np.clip(blurred + grain, 0, 255).astype(np.uint8))


def planted_copies(image: Image.Image, folder: Path, stem: str) -> list[Path]:
    """The photo as `stem`.jpg and four copies of it: an exact copy, a half-size one, a quality-40 re-encode and a
    3%-cropped PNG. Returns the five paths, the original first."""
    original = folder / f"{stem}.jpg"
    image.save(original, quality=92)
    exact = folder / f"{stem} copy.jpg"
    exact.write_bytes(original.read_bytes())
    half = folder / f"{stem}-half.jpg"
    image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS).save(half, quality=90)
    low = folder / f"{stem}-q40.jpg"
    image.save(low, quality=40)
    crop = folder / f"{stem}-crop.png"
    dx, dy = round(image.width * 0.03), round(image.height * 0.03)
    image.crop((dx, dy, image.width - dx, image.height - dy)).save(crop)
    return [original, exact, half, low, crop]
