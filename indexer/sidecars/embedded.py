"""Opt-in (`[sidecar] embedded = true`): pixdex's keywords also inside a JPEG's or TIFF's own XMP.

Lightroom reads `IMG.xmp` sidecars only for RAW files; for JPEG and TIFF it reads the XMP embedded in
the image. With this on, after the sidecar is written, its three keyword fields are copied into the
image's XMP. The image is rewritten only when the keywords differ; the new file is checked before it
replaces the old one:

- the image data is byte-for-byte the same: for a JPEG every segment but APPn/COM (quantisation and
  Huffman tables, frame header, scans and entropy-coded data); for a TIFF every strip or tile;
- the XMP graph is the same apart from the three keyword fields and `xmp:MetadataDate` (`graph`);
- the replacement is atomic and keeps the file's identity (`files.replace_owned`), and is skipped when
  the file changed since it was read.

Any refusal leaves the image untouched and is reported with the reason as the file's sidecar failure.
"""

from __future__ import annotations

import io
import os
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import pyexiv2
from PIL import Image, TiffImagePlugin

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.exiv2 import exiv2
from pixdex.indexer.files import ChangedMeanwhile, Refused, replace_owned, seen
from pixdex.indexer.metadata.reconcile import as_list
from pixdex.indexer.sidecars.keys import HIERARCHICAL, METADATA_DATE, SUBJECT, TAGS_LIST
from pixdex.indexer.sidecars.writers import check_graph, pyexiv2_values, same

FORMATS = (".jpg", ".jpeg", ".jpe", ".tif", ".tiff")
METADATA_MARKERS = set(range(0xE0, 0xF0)) | {0xFE}  # APP0–APP15, COM


def applies(image: Path) -> bool:
    return image.suffix.lower() in FORMATS


def image_data(data: bytes) -> bytes:
    """What must never change when metadata is written: a JPEG's non-metadata segments and scan data, a TIFF's
    strips or tiles (in order). Raises ValueError for a file that is neither."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_data(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_data(data)
    raise ValueError("neither a JPEG nor a TIFF")


def _jpeg_data(data: bytes) -> bytes:
    out = [b"\xff\xd8"]
    at = 2
    while at < len(data):
        if data[at] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xD9:  # EOI
            out.append(data[at:at + 2])
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            out.append(data[at:at + 2])
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        end = at + 2 + length
        if marker == 0xDA:  # start of scan: the entropy-coded data runs to the next marker that is not RSTn/stuffing
            scan_end = end
            while scan_end + 1 < len(data):
                if data[scan_end] == 0xFF and data[scan_end + 1] not in (0x00, *range(0xD0, 0xD8)):
                    break
                scan_end += 1
            out.append(data[at:scan_end])
            at = scan_end
            continue
        if marker not in METADATA_MARKERS:
            out.append(data[at:end])
        at = end
    return b"".join(out)


def _tiff_data(data: bytes) -> bytes:
    out = []
    with Image.open(io.BytesIO(data)) as image:
        if not isinstance(image, TiffImagePlugin.TiffImageFile):
            raise ValueError("a TIFF header Pillow does not read as a TIFF")
        for frame in range(getattr(image, "n_frames", 1)):
            image.seek(frame)
            tags = image.tag_v2
            offsets = tags.get(273) or tags.get(324)
            counts = tags.get(279) or tags.get(325)
            if offsets is None or counts is None:
                raise ValueError("a TIFF without strips or tiles")
            offsets = offsets if isinstance(offsets, tuple) else (offsets,)
            counts = counts if isinstance(counts, tuple) else (counts,)
            out += [data[o:o + c] for o, c in zip(offsets, counts, strict=True)]
    return b"".join(out)


def write_keywords(image: Path, values: dict[str, list[str]]) -> bool:
    """Copy the keyword fields (pyexiv2 keys → lists) into the image's own XMP. Returns whether the file was
    rewritten. Raises SidecarError (naming the image) when it is not done."""
    try:
        data = image.read_bytes()
        was = seen(os.stat(image))
    except OSError as exc:
        raise SidecarError(image, f"cannot read the image to write its XMP: {exc.strerror or exc}") from exc
    with exiv2():
        try:
            doc = pyexiv2.ImageData(data)
            try:
                xmp = dict(doc.read_xmp())
                if all(same(xmp.get(k), v) for k, v in values.items()):
                    return False
                before_packet = (doc.read_raw_xmp() or "").encode()
                update = {**values, METADATA_DATE: datetime.now().astimezone().isoformat(timespec="seconds")}
                doc.modify_xmp({k: None for k in update if k in xmp})
                doc.modify_xmp(pyexiv2_values(update))
                payload = doc.get_bytes()
            finally:
                doc.close()
            check = pyexiv2.ImageData(payload)
            try:
                after_packet = (check.read_raw_xmp() or "").encode()
            finally:
                check.close()
        except RuntimeError as exc:
            raise SidecarError(image, f"exiv2 cannot write this image's XMP ({str(exc).strip()}); left untouched") \
                from None
    try:
        same_pixels = image_data(payload) == image_data(data)
    except (ValueError, struct.error, OSError) as exc:
        raise SidecarError(image, f"cannot verify the image data ({exc}); its XMP is left untouched") from None
    if not same_pixels:
        raise SidecarError(image, "writing its XMP would change the image data; left untouched")
    if before_packet.strip():
        check_graph(image, before_packet, after_packet, list(update), "this image's XMP", "left untouched")
    try:
        replace_owned(image, payload, was)
    except ChangedMeanwhile:
        raise SidecarError(image, "the image changed while pixdex wrote its XMP; left untouched, tried again "
                                  "at its next change") from None
    except Refused as exc:
        raise SidecarError(image, f"{exc}; its XMP is left untouched") from None
    except OSError as exc:
        raise SidecarError(image, f"cannot write the image: {exc.strerror or exc}") from exc
    return True


def keyword_values(xmp: dict[str, Any]) -> dict[str, list[str]]:
    """The three keyword fields of a sidecar, to copy into the image."""
    return {key: as_list(xmp.get(key)) for key in (SUBJECT, HIERARCHICAL, TAGS_LIST)}
