"""Cheap, safe decoding: Pillow with draft-mode JPEG, EXIF orientation and every mode made RGB.

`decode_image` refuses an image whose header claims more than `max_pixels` before any pixel is
decoded (a decompression bomb gets a reason, not a crash), asks libjpeg for the smallest DCT
scale that still covers `min_side` on both sides, applies the EXIF orientation and flattens
transparency onto white. `read_exif` pulls the camera and the capture date for the indexes.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import SupportsFloat

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (and AVIF on older Pillow) when the optional plugin is installed
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - depends on the optional extra
    HEIF = False

from PIL import features

from pixdex.indexer.errors import ReadError

EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp"}
                       | ({".heic", ".heif"} if HEIF else set())
                       | ({".avif"} if HEIF or features.check("avif") else set()))

EXIF_IFD = 0x8769
MAKE, MODEL, DATETIME = 0x010F, 0x0110, 0x0132
DATETIME_ORIGINAL, DATETIME_DIGITIZED = 0x9003, 0x9004
GPS_IFD, LENS_MODEL, FOCAL_LENGTH, ISO = 0x8825, 0xA434, 0x920A, 0x8827


@dataclass(frozen=True)
class ExifFacts:
    camera: str | None = None
    taken: datetime | None = None
    lens: str | None = None
    focal: float | None = None  # mm
    iso: int | None = None
    lat: float | None = None  # degrees, north positive
    lon: float | None = None  # degrees, east positive

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in (("lens", self.lens), ("focal", self.focal), ("iso", self.iso), ("lat", self.lat),
                                  ("lon", self.lon)) if v is not None}


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # RGB, orientation applied, possibly reduced by draft mode
    width: int  # full size, after orientation
    height: int
    exif: ExifFacts


def decode_image(data: bytes, path: str, min_side: int, max_pixels: int) -> Decoded:
    """Decode `data` (the bytes of the file at `path`) into an RGB image at least `min_side` wide and high."""
    with _opened(data, path, max_pixels, "cannot decode") as image:
        exif = read_exif(image)
        width, height = _oriented_size(image)
        if image.format == "JPEG":
            image.draft("RGB", (min_side, min_side))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return Decoded(to_rgb(image), width, height, exif)


def probe_image(data: bytes, path: str, max_pixels: int) -> tuple[int, int, ExifFacts]:
    """Size (as displayed) and EXIF facts from the header alone: no pixel is decoded."""
    with _opened(data, path, max_pixels, "cannot read its header") as image:
        width, height = _oriented_size(image)
        return width, height, read_exif(image)


@contextmanager
def _opened(data: bytes, path: str, max_pixels: int, failing: str) -> Iterator[Image.Image]:
    """The image opened by Pillow (header only), bombs refused; anything Pillow raises inside becomes the
    file's ReadError with the reason (`failing`: what could not be done)."""
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own check (at open) must agree with ours
    if not data:
        raise ReadError(path, "an empty file (0 bytes): nothing to index; it is read again once it changes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            refuse_bombs(image, path, max_pixels, "decode.max_pixels", "index it")
            yield image
    except ReadError:
        raise
    except UnidentifiedImageError:
        raise ReadError(path, "not an image Pillow can read (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        size = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's own limit in its text is twice ours
        many = f"{int(size[1]):,} pixels" if size else "too many pixels"
        raise ReadError(path, f"refused as a decompression bomb: {many}, above decode.max_pixels = "
                              f"{max_pixels:,} (raise it to index this image)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
        raise ReadError(path, f"{failing}: {exc or type(exc).__name__}") from None


def refuse_bombs(image: Image.Image, path: str, max_pixels: int, setting: str, purpose: str) -> None:
    """Refuse, from the header alone, an image with no pixels or more than `max_pixels` of them."""
    w, h = image.size
    if w <= 0 or h <= 0:
        raise ReadError(path, f"image claims an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ReadError(path, f"image is {w}x{h} = {w * h:,} pixels, over {setting} = {max_pixels:,}; "
                              f"raise that setting to {purpose}")


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    w, h = image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF never stops the decode
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB: transparency over white, 16-bit and float scaled, CMYK converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if (mode == "P" and "transparency" in image.info) or mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if mode.startswith("I") or mode == "F":
        return scale_to_8bit(image).convert("RGB")
    return image.convert("RGB")


def scale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit int or float) grey → L, scaled; Pillow's own convert clips at 255 instead."""
    pixels = np.asarray(image).astype(np.float64)
    top = pixels.max(initial=0.0)
    if image.mode.startswith("I;16") or (image.mode != "F" and top > 255.0):  # 'I' may hold 16-bit data
        scaled = pixels / 257.0
    elif image.mode == "F" and top <= 1.0:
        scaled = pixels * 255.0
    else:
        scaled = pixels
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def read_exif(image: Image.Image) -> ExifFacts:
    try:
        exif = image.getexif()
        sub = exif.get_ifd(EXIF_IFD)
    except Exception:  # noqa: BLE001 - a broken EXIF block costs the facts, never the image
        return ExifFacts()
    make = _text(exif.get(MAKE))
    model = _text(exif.get(MODEL))
    camera = model if make and model and model.lower().startswith(make.split()[0].lower()) else \
        " ".join(p for p in (make, model) if p) or None
    stamp = sub.get(DATETIME_ORIGINAL) or sub.get(DATETIME_DIGITIZED) or exif.get(DATETIME)
    lens = _text(sub.get(LENS_MODEL))
    iso = _number(sub.get(ISO))
    try:
        lat, lon = _gps(exif.get_ifd(GPS_IFD))
    except Exception:  # noqa: BLE001 - a broken GPS block costs the position only
        lat = lon = None
    focal = _number(sub.get(FOCAL_LENGTH))
    return ExifFacts(camera, parse_exif_date(_text(stamp)), lens, focal if focal and focal > 0 else None,
                     int(iso) if iso is not None and 0 < iso < 10_000_000 else None, lat, lon)


def _number(value: object) -> float | None:
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    if not isinstance(value, SupportsFloat | str):  # Pillow's IFDRational, an int or a float
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _gps(gps: dict[int, object]) -> tuple[float | None, float | None]:
    """Decimal degrees from GPSLatitude/Longitude (degrees, minutes, seconds) and their N/S/E/W refs."""
    def degrees(value: object, ref: object, limit: float) -> float | None:
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            return None
        parts = [number for number in map(_number, value) if number is not None]
        if len(parts) != 3:
            return None
        d, m, sec = parts
        result = d + m / 60 + sec / 3600
        if _text(ref) in ("S", "W"):
            result = -result
        return round(result, 7) if abs(result) <= limit else None
    return degrees(gps.get(2), gps.get(1), 90), degrees(gps.get(4), gps.get(3), 180)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def parse_exif_date(value: str | None) -> datetime | None:
    if not value:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d"):
        try:
            return datetime.strptime(value[:19], fmt)
        except ValueError:
            continue
    return None
