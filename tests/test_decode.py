"""Decoding: every Pillow mode to RGB, EXIF orientation, draft-mode JPEG, hostile files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import exif_bytes, gradient, noise
from PIL import Image

from pixdex.indexer.decode import decode_image, parse_exif_date, to_rgb
from pixdex.indexer.errors import ReadError


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_palette_with_transparency_goes_over_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    image.info["transparency"] = 0
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode, pixel, expected", [
    ("RGBA", (10, 20, 30, 0), (255, 255, 255)),
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ("LA", (100, 0), (255, 255, 255)),
    ("LA", (100, 255), (100, 100, 100)),
    ("L", 77, (77, 77, 77)),
    ("1", 1, (255, 255, 255)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
])
def test_modes_become_rgb(mode: str, pixel: object, expected: tuple[int, int, int]) -> None:
    converted = to_rgb(Image.new(mode, (3, 3), pixel))  # type: ignore[arg-type]
    assert converted.mode == "RGB" and converted.getpixel((1, 1)) == expected


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (3, 1))
    image.putdata([0, 32896, 65535])
    decoded = decode_image(encode(image, "PNG"), "x.png", 1, 10**8)
    assert [decoded.image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_images_in_unit_range() -> None:
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert [to_rgb(image).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_is_applied_and_reported() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    data = encode(image, "JPEG", exif=exif_bytes(orientation=6), quality=95)  # 6: rotate 90° clockwise
    decoded = decode_image(data, "x.jpg", 64, 10**8)
    assert decoded.image.size == (20, 40) and (decoded.width, decoded.height) == (20, 40)
    r, _g, b = decoded.image.getpixel((10, 2))
    assert b > 200 and r < 60  # the blue band is now on top


def test_draft_mode_decodes_big_jpegs_small_but_covering_the_model() -> None:
    data = encode(gradient(1, (4000, 3000)), "JPEG", quality=80)
    decoded = decode_image(data, "big.jpg", 224, 10**8)
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.image.size == (500, 375)  # 1/8 scale, still ≥ 224 on both sides
    decoded = decode_image(data, "big.jpg", 448, 10**8)
    assert decoded.image.size == (1000, 750)  # 1/8 would be 375 high, too small for 448: 1/4 it is
    decoded = decode_image(data, "big.jpg", 3000, 10**8)
    assert decoded.image.size == (4000, 3000)  # nothing smaller covers 3000


def test_camera_and_capture_date_from_exif() -> None:
    data = encode(noise(1), "JPEG", exif=exif_bytes(("Canon", "Canon EOS 5D"), "2019:07:14 18:30:00"))
    decoded = decode_image(data, "x.jpg", 8, 10**8)
    assert decoded.exif.camera == "Canon EOS 5D"
    assert decoded.exif.taken is not None and decoded.exif.taken.isoformat() == "2019-07-14T18:30:00"
    data = encode(noise(2), "JPEG", exif=exif_bytes(("NIKON CORPORATION", "D70"), None))
    assert decode_image(data, "y.jpg", 8, 10**8).exif.camera == "NIKON CORPORATION D70"
    assert parse_exif_date("0000:00:00 00:00:00") is None and parse_exif_date("garbage") is None


@pytest.mark.parametrize("data, reason", [
    (b"", r"an empty file \(0 bytes\)"),
    (b"hello, world", "not an image"),
    (encode(noise(3), "JPEG")[:200], "cannot decode"),
    (encode(noise(3), "PNG")[:100], "cannot decode"),
])
def test_bad_data_gives_a_read_error_with_the_path(data: bytes, reason: str) -> None:
    with pytest.raises(ReadError, match=reason) as info:
        decode_image(data, "/photos/bad.jpg", 8, 10**8)
    assert str(info.value).startswith("/photos/bad.jpg: ")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("1", (12_000, 10_000)), "PNG")
    with pytest.raises(ReadError, match=r"decompression bomb.*decode.max_pixels = 100,000,000"):
        decode_image(bomb, "bomb.png", 8, 100_000_000)
    small_limit = encode(Image.new("RGB", (3000, 1000)), "PNG")
    # Past twice the limit Pillow refuses at open, saying its own limit (2,000,000): the message says ours.
    with pytest.raises(ReadError, match=r"decompression bomb: 3,000,000 pixels, above decode.max_pixels = 1,000,000 "
                                        r"\(raise it to index this image\)$"):
        decode_image(small_limit, "a.png", 8, 1_000_000)


def test_animated_gif_uses_its_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    r, g, _ = decode_image(buffer.getvalue(), "a.gif", 8, 10**8).image.getpixel((5, 5))
    assert r > 200 and g < 50


def test_heic_decodes_when_pillow_heif_is_installed() -> None:
    pytest.importorskip("pillow_heif")
    from pixdex.indexer.decode import EXTENSIONS

    assert ".heic" in EXTENSIONS
    data = encode(gradient(4, (128, 96)), "HEIF", quality=90)
    decoded = decode_image(data, "x.heic", 32, 10**8)
    assert decoded.image.mode == "RGB" and (decoded.width, decoded.height) == (128, 96)
