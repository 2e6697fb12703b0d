"""Thumbnails for `GET /thumbnail/{id}?size=`: reuse the desktop's, else make and cache our own.

Sizes are the freedesktop Thumbnail Managing Standard's buckets (normal 128, large 256, x-large 512,
xx-large 1024 px on the long side). `find_freedesktop` looks in `$XDG_CACHE_HOME/thumbnails/` for a
thumbnail another program made, and accepts it only if its `Thumb::URI` and `Thumb::MTime` match the
file; pixdex never writes there (that cache belongs to the desktop).

Our own cache, owned by the daemon:

    <cache_dir>/<bucket>/<id:016x>-<mtime_ns>.jpg   JPEG, quality 85 (fast to encode and to serve)
    <cache_dir>/<bucket>/<id:016x>-<mtime_ns>.png   PNG instead when the thumbnail has real transparency
    <cache_dir>/<bucket>/.pixdex-tmp-*.tmp          a write in progress (or killed: `prune_own_cache` removes it)

The source's mtime in nanoseconds is in the name, so an edited image never serves a stale thumbnail;
`prune_own_cache` removes the superseded versions and, past a byte budget, the least recently used.
`make_thumbnail` is a top-level function so that it can run in a worker process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import struct
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from pixdex.indexer.decode import refuse_bombs, scale_to_8bit  # importing it also registers HEIF
from pixdex.indexer.errors import ReadError

log = logging.getLogger(__name__)

BUCKETS: tuple[tuple[str, int], ...] = (("normal", 128), ("large", 256), ("x-large", 512), ("xx-large", 1024))
JPEG_QUALITY = 85
PNG_COMPRESS_LEVEL = 3  # level 6 (Pillow's default) costs ~2x the time for a few % of bytes
TEMP_PREFIX = ".pixdex-tmp-"
STALE_TEMP_SECONDS = 3600  # a temp file this old was left by a killed worker
_OWN_NAME = re.compile(r"^([0-9a-f]{16})-([0-9]+)\.(jpg|png)$")

# Characters g_filename_to_uri() leaves unescaped: GLib's glib/gconvert.c, table `acceptable[]` with the
# mask UNSAFE_PATH (0x8) in g_escape_uri_string(). That is ASCII letters, digits and  - . _ ~ ! ' ( ) *
# + $ & , = : @ / ; everything else, including ';' (0x20 in the table), space, '%', bytes >= 0x80 and
# control bytes, becomes %XX in upper-case hex. Checked byte by byte against libglib in the tests.
GLIB_PATH_SAFE = "/!$&'()*+,=:@-._~"


def bucket(size: int) -> tuple[str, int]:
    """The smallest freedesktop bucket whose pixel size is at least `size` (1..1024)."""
    if not 1 <= size <= BUCKETS[-1][1]:
        raise ValueError(f"thumbnail size {size} is outside 1..{BUCKETS[-1][1]}")
    return next((name, pixels) for name, pixels in BUCKETS if size <= pixels)


# ---- the desktop's cache (read only) ----

def file_uri(path: bytes) -> str:
    """The URI GLib's g_filename_to_uri() gives an absolute path: what desktop thumbnailers hash."""
    if not path.startswith(b"/"):
        raise ValueError(f"not an absolute path: {path!r}")
    return "file://" + urllib.parse.quote(path, safe=GLIB_PATH_SAFE)


def freedesktop_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/thumbnails`, or `~/.cache/thumbnails` (a relative XDG_CACHE_HOME is ignored)."""
    cache = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):
        cache = os.path.join(environ.get("HOME") or str(Path.home()), ".cache")
    return Path(cache) / "thumbnails"


def find_freedesktop(path: bytes, mtime: int, size: int, environ: Mapping[str, str]) -> Path | None:
    """A valid desktop thumbnail of `path` (mtime in whole seconds) at least `size` px, smallest first."""
    uri = file_uri(path)
    name = hashlib.md5(uri.encode("ascii"), usedforsecurity=False).hexdigest() + ".png"
    root = freedesktop_dir(environ)
    wanted = bucket(size)[1]
    for directory, pixels in BUCKETS:
        candidate = root / directory / name
        if pixels >= wanted and candidate.is_file() and _matches(candidate, uri, mtime):
            return candidate
    return None


def _matches(candidate: Path, uri: str, mtime: int) -> bool:
    try:
        with Image.open(candidate) as image:
            if not isinstance(image, PngImagePlugin.PngImageFile):
                return False
            # Text chunks before IDAT (where GNOME's thumbnailers put them) come with the header, no pixel
            # decoded; `.text` also finds chunks after IDAT, but decodes the (small) image to reach them.
            found, stamp = image.info.get("Thumb::URI"), image.info.get("Thumb::MTime")
            if found is None or stamp is None:
                found, stamp = image.text.get("Thumb::URI"), image.text.get("Thumb::MTime")
            return found == uri and _seconds(stamp) == mtime
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as exc:
        log.debug("ignoring unreadable desktop thumbnail %s: %s", candidate, exc)
        return False


def _seconds(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


# ---- our own cache ----

def own_cache_path(cache_dir: Path, image_id: int, mtime_ns: int, bucket: str) -> Path:
    """Where the JPEG thumbnail goes; `make_thumbnail` swaps the suffix to .png when it keeps alpha."""
    return cache_dir / bucket / f"{image_id:016x}-{mtime_ns}.jpg"


def find_own(cache_dir: Path, image_id: int, mtime_ns: int, bucket: str) -> Path | None:
    """The cached thumbnail of this version of the image in this bucket, whichever format it has."""
    jpeg = own_cache_path(cache_dir, image_id, mtime_ns, bucket)
    for candidate in (jpeg, jpeg.with_suffix(".png")):
        if candidate.is_file():
            return candidate
    return None


def mark_used(path: Path) -> None:
    """Record a use for the LRU in `prune_own_cache` (atime alone is unreliable under relatime/noatime)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


def make_thumbnail(path: bytes, dest: bytes | str, pixels: int, max_pixels: int) -> str:
    """Decode `path`, fit it in `pixels`×`pixels` and write it atomically at `dest` with its suffix
    replaced by .jpg, or .png when transparency is kept. Returns the path written.

    Raises ReadError for a file that cannot be opened or decoded (a truncated file included: no
    partial thumbnail is cached) or is larger than `max_pixels`; OSError when writing fails."""
    image = _decode(path, pixels, max_pixels)
    return _write(image.image, image.icc_profile, os.fsdecode(dest))


@dataclass(frozen=True)
class _Thumbnail:
    image: Image.Image  # RGB, L, RGBA or LA
    icc_profile: bytes | None  # kept only when the colour space did not change


def _decode(path: bytes, pixels: int, max_pixels: int) -> _Thumbnail:
    name = os.fsdecode(path)
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own check at open (and at seek) must agree with ours
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                refuse_bombs(image, name, max_pixels, "max_pixels", "get a thumbnail")
                if image.format == "JPEG":
                    image.draft("RGB", (pixels, pixels))  # DCT scaling: decode at 1/2..1/8 when it suffices
                image.load()
                return _shrink(image, pixels)
    except ReadError:
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise ReadError(name, f"cannot open: {exc.strerror}") from None
    except UnidentifiedImageError:
        raise ReadError(name, "not an image Pillow can read (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ReadError(name, f"refused as a decompression bomb: {exc} (limit: max_pixels = {max_pixels:,})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
        hint = "; the file looks incomplete (still being copied?)" if "truncated" in str(exc) else ""
        raise ReadError(name, f"cannot decode: {exc or type(exc).__name__}{hint}") from None


def _shrink(image: Image.Image, pixels: int) -> _Thumbnail:
    source_mode, icc = image.mode, image.info.get("icc_profile")
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block costs the rotation, never the thumbnail
        log.debug("ignoring EXIF orientation: %s", exc)
    image = _to_output_mode(image)
    image.thumbnail((pixels, pixels))  # keeps the aspect ratio, never enlarges
    image = _drop_opaque_alpha(image)
    same_space = _colour_space(source_mode) == _colour_space(image.mode)
    return _Thumbnail(image, icc if same_space and isinstance(icc, bytes) else None)


def _to_output_mode(image: Image.Image) -> Image.Image:
    """RGBA or LA when there is transparency, else RGB or L; 16-bit and float scaled to 8 bits."""
    mode = image.mode
    if mode in ("RGBA", "LA", "RGB", "L"):
        if "transparency" in image.info and mode in ("RGB", "L"):  # tRNS colour key
            return image.convert("RGBA" if mode == "RGB" else "LA")
        return image
    if mode in ("La", "PA", "RGBa") or (mode == "P" and "transparency" in image.info):
        return image.convert("LA" if mode == "La" else "RGBA")
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I") or mode == "F":
        return scale_to_8bit(image)
    return image.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV


def _drop_opaque_alpha(image: Image.Image) -> Image.Image:
    """A fully opaque alpha channel (common in screenshots) is dropped so the thumbnail can be a JPEG."""
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255:
        return image.convert(image.mode[:-1])
    return image


def _colour_space(mode: str) -> str:
    if mode in ("1", "L", "LA", "La", "F") or mode.startswith("I"):
        return "grey"
    return "rgb" if mode in ("RGB", "RGBA", "RGBa", "P", "PA") else mode


def _write(image: Image.Image, icc_profile: bytes | None, dest: str) -> str:
    alpha = image.mode in ("RGBA", "LA")
    final = os.path.splitext(dest)[0] + (".png" if alpha else ".jpg")
    directory = os.path.dirname(final) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)  # thumbnails of private photos: the owner's alone
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            extra = {"icc_profile": icc_profile} if icc_profile else {}
            if alpha:
                image.save(handle, "PNG", compress_level=PNG_COMPRESS_LEVEL, **extra)
            else:
                image.save(handle, "JPEG", quality=JPEG_QUALITY, **extra)
            handle.flush()
            os.fsync(handle.fileno())  # a crash must not leave an empty file under the final name
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return final


# ---- pruning ----

@dataclass(frozen=True)
class _Entry:
    path: Path
    key: tuple[str, int]  # (bucket, image id)
    mtime_ns: int
    size: int
    used_ns: int


def prune_own_cache(cache_dir: Path, keep_ids: set[int] | None, max_bytes: int) -> int:
    """Remove superseded versions (older mtime_ns of the same id and bucket), ids not in `keep_ids`
    (None keeps every id), temp files of killed writers, then the least recently used files until
    the cache holds at most `max_bytes`. Files it did not name are left alone. Returns bytes freed."""
    entries, freed = _scan(cache_dir)
    newest: dict[tuple[str, int], int] = {}
    for entry in entries:
        newest[entry.key] = max(newest.get(entry.key, entry.mtime_ns), entry.mtime_ns)
    kept = []
    for entry in entries:
        stale = entry.mtime_ns < newest[entry.key] or (keep_ids is not None and entry.key[1] not in keep_ids)
        if stale:
            freed += _remove(entry.path, entry.size)
        else:
            kept.append(entry)
    total = sum(entry.size for entry in kept)
    for entry in sorted(kept, key=lambda e: e.used_ns):
        if total <= max_bytes:
            break
        freed += _remove(entry.path, entry.size)
        total -= entry.size
    return freed


def _scan(cache_dir: Path) -> tuple[list[_Entry], int]:
    entries, freed = [], 0
    old_temp = time.time_ns() - STALE_TEMP_SECONDS * 1_000_000_000
    for name, _pixels in BUCKETS:
        with contextlib.suppress(FileNotFoundError), os.scandir(cache_dir / name) as listing:
            for item in listing:
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if item.name.startswith(TEMP_PREFIX):
                    freed += _remove(Path(item.path), info.st_size) if info.st_mtime_ns < old_temp else 0
                elif match := _OWN_NAME.match(item.name):
                    key = (name, int(match.group(1), 16))
                    used = max(info.st_atime_ns, info.st_mtime_ns)
                    entries.append(_Entry(Path(item.path), key, int(match.group(2)), info.st_size, used))
    return entries, freed


def _remove(path: Path, size: int) -> int:
    try:
        path.unlink()
    except FileNotFoundError:  # removed meanwhile (another prune, or the image was deleted)
        return 0
    return size
