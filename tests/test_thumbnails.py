"""Thumbnails: the desktop's cache found and checked, our own made from real generated files, pruned."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from pixdex.indexer.errors import ReadError
from pixdex.indexer.thumbnails import (
    TEMP_PREFIX,
    bucket,
    file_uri,
    find_freedesktop,
    find_own,
    make_thumbnail,
    mark_used,
    own_cache_path,
    prune_own_cache,
)

MTIME = 1_700_000_000
MAX_PIXELS = 50_000_000
RNG_SEED = 20240601


def leftovers(root: Path) -> list[str]:
    return [os.path.join(d, f) for d, _dirs, files in os.walk(root) for f in files if f.startswith(TEMP_PREFIX)]


def noisy(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    bands = len(mode)
    pixels = np.random.default_rng(RNG_SEED).integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(), mode)


def opened(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def rgb(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple), value
    return value


def level(image: Image.Image, xy: tuple[int, int]) -> int:
    value = image.getpixel(xy)
    assert isinstance(value, int), value
    return value


def thumb(tmp_path: Path, source: Path, pixels: int = 128) -> Image.Image:
    written = make_thumbnail(os.fsencode(source), str(tmp_path / "out" / "thumb.jpg"), pixels, MAX_PIXELS)
    image = opened(written)
    assert max(image.size) <= pixels
    assert not leftovers(tmp_path)
    return image


# ---- buckets and URIs ----

def test_bucket_is_the_smallest_standard_size_that_covers_the_request() -> None:
    assert bucket(1) == ("normal", 128)
    assert bucket(128) == ("normal", 128)
    assert bucket(129) == ("large", 256)
    assert bucket(512) == ("x-large", 512)
    assert bucket(1024) == ("xx-large", 1024)
    for bad in (0, 1025):
        with pytest.raises(ValueError):
            bucket(bad)


# Expected values worked out by hand from GLib's g_escape_uri_string() table (glib/gconvert.c,
# `acceptable[]` & UNSAFE_PATH): space, ';', '#', '%' and every byte >= 0x80 become upper-case %XX,
# while ( ) - . _ ~ / stay; then md5 of the ASCII URI. Confirmed with libglib's g_filename_to_uri.
# The first is the example of the Thumbnail Managing Standard itself.
KNOWN = [
    (b"/home/jens/photos/me.png", "file:///home/jens/photos/me.png", "c6ee772d9e49320e97ec29a7eb5b1697"),
    (b"/home/user/Pictures/My Photo.jpg", "file:///home/user/Pictures/My%20Photo.jpg",
     "1d04d8fc84a6be03815bedca0a53cf5d"),
    (b"/home/user/caf\xc3\xa9 (2);x.png", "file:///home/user/caf%C3%A9%20(2)%3Bx.png",
     "59b88aac696e10e8905cc47c86723fa9"),
    (b"/photos/\xff\xfe latin1-\xe9t\xe9 #1 100%.jpg", "file:///photos/%FF%FE%20latin1-%E9t%E9%20%231%20100%25.jpg",
     "06011acad3dc685d4405d31695f7c97f"),
]


@pytest.mark.parametrize(("path", "uri", "md5"), KNOWN)
def test_uri_and_md5_match_glib_known_values(path: bytes, uri: str, md5: str) -> None:
    assert file_uri(path) == uri
    assert hashlib.md5(file_uri(path).encode()).hexdigest() == md5


def _glib_filename_to_uri() -> Callable[[bytes], str]:
    name = ctypes.util.find_library("glib-2.0")
    if name is None:
        pytest.skip("libglib-2.0 not installed: the hard-coded values above still run")
    glib = ctypes.CDLL(name)
    glib.g_filename_to_uri.restype = ctypes.c_void_p
    glib.g_filename_to_uri.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    glib.g_free.argtypes = [ctypes.c_void_p]

    def to_uri(path: bytes) -> str:
        pointer = glib.g_filename_to_uri(path, None, None)
        assert pointer, path
        try:
            return ctypes.string_at(pointer).decode("ascii")
        finally:
            glib.g_free(pointer)
    return to_uri


def test_uri_escaping_matches_libglib_for_every_byte() -> None:
    to_uri = _glib_filename_to_uri()
    for byte in range(1, 256):
        path = b"/dir name/a" + bytes([byte]) + b"b.jpg"
        assert file_uri(path) == to_uri(path), (byte, chr(byte))


def test_relative_paths_have_no_uri() -> None:
    with pytest.raises(ValueError):
        file_uri(b"photos/me.png")


# ---- the desktop's cache ----

@pytest.fixture
def photo(tmp_path: Path) -> bytes:
    """A real JPEG whose name has a space, UTF-8, a non-UTF-8 byte and ';', with a fractional mtime."""
    directory = os.fsencode(tmp_path) + b"/My Photos"
    os.mkdir(directory)
    path = directory + b"/caf\xc3\xa9 \xff;#1.jpg"
    with open(path, "wb") as handle:
        noisy((64, 48)).save(handle, "JPEG")
    os.utime(path, (MTIME + 0.75, MTIME + 0.75))
    return path


def desktop_thumbnail(cache: Path, bucket_name: str, path: bytes, uri: str, mtime: str,
                      *, after_idat: bool = False) -> Path:
    """A thumbnail as GNOME's thumbnailers write it (text chunks before IDAT, or after when asked)."""
    target = cache / "thumbnails" / bucket_name / (hashlib.md5(file_uri(path).encode()).hexdigest() + ".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (128, 96), (10, 20, 30))
    if not after_idat:
        info = PngImagePlugin.PngInfo()
        info.add_text("Thumb::URI", uri)
        info.add_text("Thumb::MTime", mtime)
        image.save(target, "PNG", pnginfo=info)
        return target
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    end = data.rindex(b"IEND") - 4
    chunks = b"".join(_chunk(b"tEXt", key + b"\0" + value.encode())
                      for key, value in ((b"Thumb::URI", uri), (b"Thumb::MTime", mtime)))
    target.write_bytes(data[:end] + chunks + data[end:])
    return target


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def test_a_valid_desktop_thumbnail_is_found(tmp_path: Path, photo: bytes) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": "/nonexistent"}
    written = desktop_thumbnail(tmp_path / "cache", "large", photo, file_uri(photo), str(MTIME))
    assert "%FF%3B%231.jpg" in file_uri(photo)
    assert find_freedesktop(photo, MTIME, 200, environ) == written
    assert find_freedesktop(photo, MTIME, 256, environ) == written
    assert find_freedesktop(photo, MTIME, 100, environ) == written  # a larger bucket serves a smaller request
    assert find_freedesktop(photo, MTIME, 300, environ) is None  # never a smaller one for a larger request


def test_the_smallest_sufficient_bucket_wins(tmp_path: Path, photo: bytes) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    desktop_thumbnail(tmp_path / "cache", "x-large", photo, file_uri(photo), str(MTIME))
    normal = desktop_thumbnail(tmp_path / "cache", "normal", photo, file_uri(photo), str(MTIME))
    assert find_freedesktop(photo, MTIME, 64, environ) == normal


def test_text_chunks_after_the_image_data_are_read_too(tmp_path: Path, photo: bytes) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    written = desktop_thumbnail(tmp_path / "cache", "normal", photo, file_uri(photo), str(MTIME), after_idat=True)
    with Image.open(written) as image:
        assert "Thumb::URI" not in image.info  # really after IDAT: not read with the header
    assert find_freedesktop(photo, MTIME, 128, environ) == written


def test_wrong_mtime_or_uri_is_rejected(tmp_path: Path, photo: bytes) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    desktop_thumbnail(tmp_path / "cache", "normal", photo, file_uri(photo), str(MTIME - 1))
    assert find_freedesktop(photo, MTIME, 128, environ) is None
    # A URI escaped differently (';' left as is) belongs to some other file: refused.
    other = "file://" + file_uri(photo)[len("file://"):].replace("%3B", ";")
    desktop_thumbnail(tmp_path / "cache", "normal", photo, other, str(MTIME))
    assert find_freedesktop(photo, MTIME, 128, environ) is None
    desktop_thumbnail(tmp_path / "cache", "normal", photo, file_uri(photo), "not a number")
    assert find_freedesktop(photo, MTIME, 128, environ) is None
    desktop_thumbnail(tmp_path / "cache", "normal", photo, file_uri(photo), str(MTIME))
    assert find_freedesktop(photo, MTIME, 128, environ) is not None


def test_a_corrupt_desktop_thumbnail_is_ignored(tmp_path: Path, photo: bytes) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    target = desktop_thumbnail(tmp_path / "cache", "normal", photo, file_uri(photo), str(MTIME))
    target.write_bytes(target.read_bytes()[:20])
    assert find_freedesktop(photo, MTIME, 128, environ) is None


def test_home_cache_is_the_default_and_relative_xdg_is_ignored(tmp_path: Path, photo: bytes) -> None:
    written = desktop_thumbnail(tmp_path / "home" / ".cache", "normal", photo, file_uri(photo), str(MTIME))
    assert find_freedesktop(photo, MTIME, 128, {"HOME": str(tmp_path / "home")}) == written
    environ = {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": "relative/cache"}
    assert find_freedesktop(photo, MTIME, 128, environ) == written


# ---- making our own ----

def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: the stored left edge becomes the top
    image.save(tmp_path / "rotated.jpg", exif=exif)
    result = thumb(tmp_path, tmp_path / "rotated.jpg", 64)
    assert result.size == (32, 64)
    top, bottom = rgb(result, (16, 4)), rgb(result, (16, 60))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert result.getexif().get(0x0112) in (None, 1)  # viewers must not rotate it again


@pytest.mark.parametrize(("size", "pixels", "expected"), [
    ((3000, 2000), 128, (128, 85)),  # draft-mode JPEG decode, then resampled
    ((2000, 3000), 1024, (683, 1024)),
    ((50, 40), 128, (50, 40)),  # never enlarged
    ((2000, 10), 1, (1, 1)),
])
def test_long_side_never_exceeds_the_request(tmp_path: Path, size: tuple[int, int], pixels: int,
                                              expected: tuple[int, int]) -> None:
    noisy(size).save(tmp_path / "big.jpg", quality=70)
    result = thumb(tmp_path, tmp_path / "big.jpg", pixels)
    assert result.size == expected
    assert result.format == "JPEG" and result.mode == "RGB"


def test_png_with_alpha_stays_png_with_alpha(tmp_path: Path) -> None:
    image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    image.paste((0, 200, 0, 255), (150, 0, 300, 200))
    image.save(tmp_path / "alpha.png")
    written = make_thumbnail(os.fsencode(tmp_path / "alpha.png"), str(tmp_path / "out" / "a.jpg"), 128, MAX_PIXELS)
    assert written == str(tmp_path / "out" / "a.png")
    result = opened(written)
    assert (result.format, result.mode, result.size) == ("PNG", "RGBA", (128, 85))
    assert rgb(result, (5, 40))[3] == 0
    assert rgb(result, (120, 40)) == (0, 200, 0, 255)


def test_opaque_alpha_and_grey_alpha(tmp_path: Path) -> None:
    Image.new("RGBA", (64, 64), (1, 2, 3, 255)).save(tmp_path / "opaque.png")
    assert make_thumbnail(os.fsencode(tmp_path / "opaque.png"), str(tmp_path / "o"), 128, MAX_PIXELS).endswith(".jpg")
    grey = Image.new("LA", (64, 64), (100, 0))
    grey.paste((100, 255), (32, 0, 64, 64))
    grey.save(tmp_path / "grey.png")
    written = make_thumbnail(os.fsencode(tmp_path / "grey.png"), str(tmp_path / "g"), 128, MAX_PIXELS)
    assert written.endswith(".png") and opened(written).mode == "LA"


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (400, 300), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert opened(tmp_path / "cmyk.jpg").mode == "CMYK"
    result = thumb(tmp_path, tmp_path / "cmyk.jpg")
    assert result.mode == "RGB"
    red = rgb(result, (64, 48))
    assert red[0] > 230 and red[1] < 30 and red[2] < 30, red


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.full((100, 200), 8192, dtype=np.uint16)
    values[:, 100:] = 49152
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert opened(tmp_path / "deep.png").mode.startswith("I")
    result = thumb(tmp_path, tmp_path / "deep.png")
    assert result.mode == "L"
    assert abs(level(result, (10, 30)) - 32) <= 3  # 8192 / 257; clipping would give 255
    assert abs(level(result, (118, 30)) - 191) <= 3


def test_palette_gif_with_and_without_transparency(tmp_path: Path) -> None:
    image = Image.new("RGB", (120, 60), (255, 255, 0))
    image.paste((0, 0, 255), (60, 0, 120, 60))
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.save(tmp_path / "plain.gif")
    result = thumb(tmp_path, tmp_path / "plain.gif")
    assert result.mode == "RGB" and result.size == (120, 60)
    yellow, blue = rgb(result, (10, 30)), rgb(result, (110, 30))
    assert yellow[0] > 230 and yellow[1] > 230 and yellow[2] < 40, yellow
    assert blue[2] > 230 and blue[0] < 40, blue

    blue_index = palette.getpixel((110, 30))
    palette.save(tmp_path / "clear.gif", transparency=blue_index)
    written = make_thumbnail(os.fsencode(tmp_path / "clear.gif"), str(tmp_path / "c"), 128, MAX_PIXELS)
    result = opened(written)
    assert (result.format, result.mode) == ("PNG", "RGBA")
    assert rgb(result, (110, 30))[3] == 0 and rgb(result, (10, 30))[3] == 255


def test_truncated_jpeg_is_a_read_error(tmp_path: Path) -> None:
    """Decision: no partial thumbnail. The file may still be being copied, and a grey-bottomed
    thumbnail would be cached under this mtime for good; an error lets the next request retry."""
    noisy((800, 600)).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    for pixels in (128, 1024):  # reduced (draft) and full-scale decoding
        with pytest.raises(ReadError, match="truncated") as error:
            make_thumbnail(os.fsencode(tmp_path / "cut.jpg"), str(tmp_path / "out" / "t"), pixels, MAX_PIXELS)
        assert error.value.path == str(tmp_path / "cut.jpg")
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("size", [(200, 200), (110, 100)])  # over twice the limit (Pillow's error) and just over
def test_decompression_bombs_are_refused(tmp_path: Path, size: tuple[int, int]) -> None:
    Image.new("RGB", size).save(tmp_path / "bomb.png")
    with pytest.raises(ReadError, match="max_pixels") as error, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_thumbnail(os.fsencode(tmp_path / "bomb.png"), str(tmp_path / "out" / "b"), 128, 10_000)
    assert not caught  # Pillow's DecompressionBombWarning became the error, it did not leak as a warning
    assert str(tmp_path / "bomb.png") in str(error.value)
    assert not leftovers(tmp_path)


def test_non_image_and_missing_files_name_the_file(tmp_path: Path) -> None:
    path = os.fsencode(tmp_path) + b"/notes \xff.jpg"
    with open(path, "wb") as handle:
        handle.write(b"just some text, not a JPEG\n")
    with pytest.raises(ReadError, match="not an image") as error:
        make_thumbnail(path, str(tmp_path / "out" / "n"), 128, MAX_PIXELS)
    assert str(tmp_path) + "/notes \\xff.jpg" in str(error.value)
    with pytest.raises(ReadError, match="cannot open: No such file"):
        make_thumbnail(os.fsencode(tmp_path / "gone.jpg"), str(tmp_path / "out" / "n"), 128, MAX_PIXELS)
    assert not (tmp_path / "out").exists()


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    """A real write failure: the worker runs under a 2 KB file-size limit, so the write gets EFBIG."""
    noisy((800, 600)).save(tmp_path / "noise.png")
    script = textwrap.dedent(f"""
        import errno, os, resource, signal
        from pixdex.indexer.thumbnails import make_thumbnail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            make_thumbnail({os.fsencode(tmp_path / "noise.png")!r}, {str(tmp_path / "out" / "x")!r}, 512, 10**8)
        except OSError as exc:
            print("failed", errno.errorcode[exc.errno])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "failed EFBIG", done.stderr
    assert (tmp_path / "out").is_dir() and not list((tmp_path / "out").iterdir())


def test_bytes_destination_and_cache_paths(tmp_path: Path) -> None:
    noisy((64, 64)).save(tmp_path / "src.jpg")
    dest = own_cache_path(tmp_path / "cache", 255, 1234567890123456789, "normal")
    assert dest == tmp_path / "cache" / "normal" / "00000000000000ff-1234567890123456789.jpg"
    assert find_own(tmp_path / "cache", 255, 1234567890123456789, "normal") is None
    written = make_thumbnail(os.fsencode(tmp_path / "src.jpg"), os.fsencode(dest), 128, MAX_PIXELS)
    assert written == str(dest)
    assert find_own(tmp_path / "cache", 255, 1234567890123456789, "normal") == dest
    assert find_own(tmp_path / "cache", 255, 1234567890123456790, "normal") is None
    assert find_own(tmp_path / "cache", 255, 1234567890123456789, "large") is None


# ---- pruning ----

def put(cache: Path, bucket_name: str, name: str, size: int, used: float) -> Path:
    path = cache / bucket_name / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (used, used))
    return path


def test_prune_removes_old_versions_deleted_ids_and_dead_temp_files(tmp_path: Path) -> None:
    cache, now = tmp_path / "cache", time.time()
    old = put(cache, "normal", f"{1:016x}-100.jpg", 10, now)
    new = put(cache, "normal", f"{1:016x}-200.png", 20, now)
    large = put(cache, "large", f"{1:016x}-100.jpg", 40, now)  # another bucket: its own newest
    gone = put(cache, "normal", f"{3:016x}-100.jpg", 80, now)
    dead_temp = put(cache, "normal", TEMP_PREFIX + "abc.tmp", 160, now - 2 * 3600)
    live_temp = put(cache, "normal", TEMP_PREFIX + "def.tmp", 320, now - 60)  # a write in progress
    foreign = put(cache, "normal", "README", 640, now)
    freed = prune_own_cache(cache, {1, 2}, 10**9)
    assert freed == 10 + 80 + 160
    assert [p.exists() for p in (old, new, large, gone, dead_temp, live_temp, foreign)] == \
           [False, True, True, False, False, True, True]
    assert prune_own_cache(cache, None, 10**9) == 0


def test_prune_removes_least_recently_used_beyond_the_budget(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    oldest = put(cache, "normal", f"{1:016x}-1.jpg", 100, 1_000_000_000)
    middle = put(cache, "large", f"{2:016x}-1.jpg", 100, 1_100_000_000)
    recent = put(cache, "x-large", f"{3:016x}-1.png", 100, 1_200_000_000)
    mark_used(oldest)  # served just now: it becomes the most recently used
    assert prune_own_cache(cache, None, 250) == 100
    assert (oldest.exists(), middle.exists(), recent.exists()) == (True, False, True)
    assert prune_own_cache(cache, None, 0) == 200
    assert not any(p.exists() for p in (oldest, middle, recent))
    assert prune_own_cache(tmp_path / "nothing-here", None, 0) == 0
