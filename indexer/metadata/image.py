"""A person's metadata inside an image's own bytes: XMP, IPTC and EXIF read with pyexiv2, each block on
its own, text decoded by its charset, then reconciled by the MWG rules (`metadata.reconcile`).

- IPTC by its CodedCharacterSet (``Iptc.Envelope.CharacterSet``): UTF-8 when it says ``ESC % G``;
  without it, UTF-8 when the bytes are valid UTF-8, else Latin-1 (Windows-1252, as exiftool and digiKam
  read it: what exiftool writes unless told otherwise, and many cameras and older programs). A field
  declared UTF-8 that is not is read as Latin-1, with a warning.
- EXIF text declares no charset (ASCII by the standard; UTF-8 or Latin-1 in practice): UTF-8 when
  valid, else Latin-1.
- XMP is UTF-8 by definition; a value that is not is read as Latin-1, with a warning.
- A block exiv2 cannot read at all costs that block, with a warning; the others still count.

pyexiv2 decodes every value with one `encoding`; reading with Latin-1 keeps every byte, so each value
is decoded again here, field by field (hand-written: pyexiv2 has no per-field charset). Warnings come
back with the metadata (`Embedded.warnings`, kept with the image in the catalog) and are raised as
Python warnings, which the decode worker records with the file (`captured.Captured`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from pixdex.indexer.exiv2 import exiv2
from pixdex.indexer.metadata.photoshop import iptc_in_sync
from pixdex.indexer.metadata.reconcile import Embedded, reconcile

IPTC_UTF8 = "\x1b%G"  # ISO 2022 escape for UTF-8, the value of Iptc.Envelope.CharacterSet


class MetadataWarning(UserWarning):
    """Part of an image's metadata could not be read as written; the rest was."""


def embedded_metadata(data: bytes) -> Embedded:
    """A person's metadata inside an image's own bytes (XMP, IPTC and EXIF, reconciled)."""
    return read_embedded(data)[0]


def read_embedded(data: bytes) -> tuple[Embedded, bytes]:
    """`embedded_metadata` and the image's raw XMP packet (b"" when none), from one parse."""
    notes: list[str] = []
    with exiv2() as pyexiv2:
        image = _opened(pyexiv2, data, notes)
        if image is None:
            return _noted(Embedded(), notes), b""
        try:
            xmp = _block(image.read_xmp, "XMP", _decode_xmp, notes)
            iptc = _block(image.read_iptc, "IPTC", _decode_iptc, notes)
            exif = _block(image.read_exif, "EXIF", _decode_exif, notes)
            raw = _raw_xmp(image)
        finally:
            image.close()
    return _noted(reconcile(xmp, iptc, exif, iptc_in_sync(data)), notes), raw


def _noted(facts: Embedded, notes: list[str]) -> Embedded:
    for note in notes:
        warnings.warn(note, MetadataWarning, stacklevel=3)
    return dataclasses.replace(facts, warnings=notes)


def _opened(pyexiv2: Any, data: bytes, notes: list[str]) -> Any:
    """exiv2's view of the image. exiv2 refuses a whole image when its EXIF block is broken (an IFD with
    65535 entries…): a JPEG is then opened again without its EXIF segment, so its XMP and IPTC still
    count. None (and a note) when exiv2 cannot read it at all."""
    try:
        return pyexiv2.ImageData(data)
    except RuntimeError as exc:
        reason = str(exc).strip() or "exiv2 error"
    stripped = without_exif(data)
    if stripped is not None:
        try:
            image = pyexiv2.ImageData(stripped)
            notes.append(f"EXIF metadata is unreadable and was skipped ({reason})")
            return image
        except RuntimeError:
            pass
    if data[:2] == b"\xff\xd8" or data[:4] in (b"II*\x00", b"MM\x00*"):  # formats exiv2 reads metadata of
        notes.append(f"the image's metadata is unreadable and was skipped ({reason})")
    return None


def without_exif(data: bytes) -> bytes | None:
    """A JPEG without its EXIF (APP1 ``Exif``) segments; None when it is no JPEG or has none."""
    if data[:2] != b"\xff\xd8":
        return None
    out, at, dropped = [data[:2]], 2, False
    while at + 4 <= len(data) and data[at] == 0xFF and data[at + 1] not in (0xDA, 0xD9):
        end = at + 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if data[at + 1] == 0xE1 and data[at + 4:at + 10] == b"Exif\x00\x00":
            dropped = True
        else:
            out.append(data[at:end])
        at = end
    return b"".join([*out, data[at:]]) if dropped else None


def _block(read: Any, name: str, decode: Any, notes: list[str]) -> dict[str, Any]:
    """One metadata block, read with every byte kept (Latin-1) and decoded field by field; {} (and a
    note) when exiv2 cannot read it."""
    try:
        values = dict(read(encoding="latin-1"))
        decoded: dict[str, Any] = decode(values, notes)
    except Exception as exc:  # noqa: BLE001 - exiv2's RuntimeError, or a value no decoding fits: this block only is lost
        notes.append(f"{name} metadata is unreadable and was skipped ({str(exc).strip() or type(exc).__name__})")
        return {}
    return decoded


def _raw_xmp(image: Any) -> bytes:
    try:
        return str(image.read_raw_xmp(encoding="latin-1") or "").encode("latin-1")
    except (RuntimeError, UnicodeError):  # a packet that cannot seed a sidecar still has its facts
        return b""


def _decode_iptc(values: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    declared = values.get("Iptc.Envelope.CharacterSet") == IPTC_UTF8
    out = {}
    for key, value in values.items():
        out[key], bad = _decoded(value)
        if bad and declared:
            notes.append(f"IPTC {key.rsplit('.', 1)[-1]} is declared UTF-8 but is not; read as Latin-1")
    return out


def _decode_exif(values: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    return {key: _decoded(value)[0] for key, value in values.items()}


def _decode_xmp(values: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        out[key], bad = _decoded(value)
        if bad:
            notes.append(f"XMP {key.split('.', 1)[-1]} is not UTF-8; read as Latin-1")
    return out


def _decoded(value: Any) -> tuple[Any, bool]:
    """A value pyexiv2 read as Latin-1, as text: UTF-8 when its bytes are, else Latin-1. The flag says a
    part was not UTF-8 (only a byte below 0x80 is the same in both)."""
    if isinstance(value, str):
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:  # decoded by pyexiv2 already (Windows' XP* tags are UCS-2)
            return value, False
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError:
            return latin(raw), True
    if isinstance(value, list):
        items = [_decoded(v) for v in value]
        return [v for v, _bad in items], any(bad for _v, bad in items)
    if isinstance(value, dict):
        entries = {_decoded(k)[0]: _decoded(v) for k, v in value.items()}
        return {k: v for k, (v, _bad) in entries.items()}, any(bad for _v, bad in entries.values())
    return value, False


def latin(raw: bytes) -> str:
    """Bytes in Latin-1 as Windows writes it (cp1252: its 0x80–0x9F are € ‘ ’ “ ” …), strict Latin-1 for the
    five bytes cp1252 leaves undefined."""
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
