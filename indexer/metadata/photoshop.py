"""The IPTC digest in the Photoshop image resources: is an image's XMP in sync with its IPTC?

The resources are read from a JPEG's APP13 (as Pillow parses it) or a TIFF's tag 34377 (parsed here):
resource 0x0425 holds the MD5 of resource 0x0404, the IPTC data, as the program that last wrote both saw it.
"""

from __future__ import annotations

import hashlib
import io
import struct

from PIL import Image, TiffImagePlugin


def iptc_in_sync(data: bytes) -> bool:
    """Whether the image's XMP may be trusted over its IPTC: True unless a stored IPTC digest exists
    and no longer matches the IPTC data (a program that ignores XMP changed the IPTC since)."""
    resources = photoshop_resources(data)
    stored, iptc = resources.get(0x0425), resources.get(0x0404)
    if stored is None or iptc is None:
        return True
    return hashlib.md5(iptc, usedforsecurity=False).digest() == stored[:16]


def photoshop_resources(data: bytes) -> dict[int, bytes]:
    """The Photoshop image resources (8BIM blocks) of a JPEG or TIFF, by id ({} when none or unreadable)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format in ("JPEG", "MPO"):  # Pillow parses the APP13 resources itself
                return {int(k): v for k, v in (image.info.get("photoshop") or {}).items() if isinstance(v, bytes)}
            if image.format == "TIFF" and isinstance(image, TiffImagePlugin.TiffImageFile):
                blocks = [bytes(image.tag_v2[34377])] if 34377 in image.tag_v2 else []
            else:
                return {}
    except Exception:  # noqa: BLE001 - Pillow raises many kinds on a hostile file: its metadata is lost, not the image
        return {}
    out: dict[int, bytes] = {}
    for block in blocks:
        out.update(_irb(block))
    return out


def _irb(block: bytes) -> dict[int, bytes]:
    """Parse '8BIM' resource blocks: signature, id (2), Pascal name padded to even, size (4), data padded."""
    out: dict[int, bytes] = {}
    at = 0
    while at + 12 <= len(block) and block[at:at + 4] == b"8BIM":
        (ident,) = struct.unpack(">H", block[at + 4:at + 6])
        name_len = block[at + 6]
        at += 6 + ((name_len + 2) & ~1)
        if at + 4 > len(block):
            break
        (size,) = struct.unpack(">I", block[at:at + 4])
        at += 4
        out.setdefault(ident, block[at:at + size])
        at += size + (size & 1)
    return out
