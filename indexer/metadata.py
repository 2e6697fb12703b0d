"""What a person (or their camera, or another program) already wrote inside an image: keywords,
title, description, creator, rating, headline and location — reconciled across XMP, IPTC and EXIF
with the Metadata Working Group's rules, as exiftool's MWG module applies them:

- keywords, title, creator, location: XMP when it has the field and the IPTC block is in sync
  with it (no stored IPTC digest, or a digest that matches the IPTC data); else IPTC. An IPTC
  block changed by a program that does not know XMP (digest mismatch) wins over stale XMP.
- description and creator: EXIF (ImageDescription, Artist) first when not blank, then XMP/IPTC as above.
- GPS position: EXIF's GPSLatitude/GPSLongitude first, then XMP's ``exif:GPSLatitude``/``exif:GPSLongitude``
  (``48,51.4N``: the reference is inside the value); a sidecar's counts when the image has neither.

MWG.jpg in the exiftool corpus holds a WRONG value in every field that loses; tests check none of
them is indexed. The IPTC digest is read from the Photoshop image resources (JPEG APP13 as Pillow
parses it; TIFF tag 34377, parsed here) by `iptc_in_sync`: resource 0x0425 holds the MD5 of resource 0x0404 (the IPTC data).
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

XMP_FIRST = {  # field → (XMP key, IPTC key)
    "title": ("Xmp.dc.title", "Iptc.Application2.ObjectName"),
    "headline": ("Xmp.photoshop.Headline", "Iptc.Application2.Headline"),
    "city": ("Xmp.photoshop.City", "Iptc.Application2.City"),
    "sublocation": ("Xmp.iptc.Location", "Iptc.Application2.SubLocation"),
    "state": ("Xmp.photoshop.State", "Iptc.Application2.ProvinceState"),
    "country": ("Xmp.photoshop.Country", "Iptc.Application2.CountryName"),
}


@dataclass(frozen=True)
class Embedded:
    """A person's metadata in one image (or sidecar), after reconciliation."""

    keywords: list[str] = field(default_factory=list)
    title: str = ""
    description: str = ""
    creator: list[str] = field(default_factory=list)
    rating: int | None = None
    headline: str = ""
    city: str = ""
    sublocation: str = ""
    state: str = ""
    country: str = ""
    created: str = ""  # ISO date from XMP/IPTC (photoshop:DateCreated, xmp:CreateDate, IPTC DateCreated)
    lat: float | None = None  # degrees, north positive: EXIF GPS, else XMP's
    lon: float | None = None  # degrees, east positive
    warnings: list[str] = field(default_factory=list)  # what could not be read as written (image_metadata)

    def text(self) -> str:
        """Everything a text search should find, once each."""
        parts = [*self.keywords, self.title, self.headline, self.description, *self.creator,
                 self.sublocation, self.city, self.state, self.country]
        return " ".join(dict.fromkeys(p.strip() for p in parts if p and p.strip()))

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", [], None)}


def as_list(value: Any) -> list[str]:
    """pyexiv2's value of a list property (a list, one string, or {} for an empty container)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [] if value.startswith("type=") or not value.strip() else [value]
    if isinstance(value, dict):
        return [str(v) for v in value.values()]
    return [str(v) for v in value if str(v).strip()]


def lang_alt(value: Any) -> str:
    """The default of a language alternative (x-default, else the first one)."""
    if isinstance(value, dict):
        return str(value.get('lang="x-default"') or next(iter(value.values()), "")).strip()
    if isinstance(value, list):
        return str(value[0]).strip() if value else ""
    return str(value or "").strip()


def reconcile(xmp: dict[str, Any], iptc: dict[str, Any], exif: dict[str, Any], in_sync: bool = True) -> Embedded:
    """The MWG view of one image's three metadata blocks. `in_sync`: see `iptc_in_sync`."""
    def pick(xmp_value: Any, iptc_value: Any) -> Any:
        has_xmp = bool(as_list(xmp_value)) if not isinstance(xmp_value, dict) else bool(lang_alt(xmp_value))
        return xmp_value if has_xmp and (in_sync or not iptc_value) else iptc_value

    keywords = as_list(pick(xmp.get("Xmp.dc.subject"), iptc.get("Iptc.Application2.Keywords")))
    description = str(exif.get("Exif.Image.ImageDescription") or "").strip()
    if not description:
        description = lang_alt(pick(xmp.get("Xmp.dc.description"), iptc.get("Iptc.Application2.Caption")))
    creator = [a.strip() for a in str(exif.get("Exif.Image.Artist") or "").split(";") if a.strip()]
    creator = creator or as_list(pick(xmp.get("Xmp.dc.creator"), iptc.get("Iptc.Application2.Byline")))
    values: dict[str, Any] = {name: lang_alt(pick(xmp.get(x), iptc.get(i))) for name, (x, i) in XMP_FIRST.items()}
    iptc_date = str(iptc.get("Iptc.Application2.DateCreated") or "")
    created = _iso_date(pick(xmp.get("Xmp.photoshop.DateCreated") or xmp.get("Xmp.xmp.CreateDate"),
                             f"{iptc_date}T{iptc.get('Iptc.Application2.TimeCreated') or '00:00:00'}"
                             if iptc_date else None))
    lat, lon = exif_gps(exif)
    if lat is None or lon is None:
        lat, lon = xmp_gps(xmp)
    return Embedded(keywords=list(dict.fromkeys(keywords)), description=description, creator=creator,
                    rating=_rating(xmp.get("Xmp.xmp.Rating") or exif.get("Exif.Image.Rating")), created=created,
                    lat=lat, lon=lon, **values)


def exif_gps(exif: dict[str, Any]) -> tuple[float | None, float | None]:
    """Decimal degrees from EXIF's GPSLatitude/GPSLongitude (``48/1 51/1 2400/100``) and their N/S/E/W refs."""
    def degrees(value: Any, ref: Any, limit: float) -> float | None:
        try:
            d, m, s = (_fraction(part) for part in str(value or "").split())
        except (ValueError, ZeroDivisionError):
            return None
        result = (d + m / 60 + s / 3600) * (-1 if str(ref or "").strip().upper() in ("S", "W") else 1)
        return round(result, 7) if abs(result) <= limit else None

    lat = degrees(exif.get("Exif.GPSInfo.GPSLatitude"), exif.get("Exif.GPSInfo.GPSLatitudeRef"), 90)
    lon = degrees(exif.get("Exif.GPSInfo.GPSLongitude"), exif.get("Exif.GPSInfo.GPSLongitudeRef"), 180)
    return (lat, lon) if lat is not None and lon is not None else (None, None)


def _fraction(text: str) -> float:
    top, _slash, bottom = text.partition("/")
    return float(top) / float(bottom or 1)


def xmp_gps(xmp: dict[str, Any]) -> tuple[float | None, float | None]:
    """Decimal degrees from XMP's ``exif:GPSLatitude``/``exif:GPSLongitude``."""
    lat = xmp_coordinate(xmp.get("Xmp.exif.GPSLatitude"), "NS", 90)
    lon = xmp_coordinate(xmp.get("Xmp.exif.GPSLongitude"), "EW", 180)
    return (lat, lon) if lat is not None and lon is not None else (None, None)


def xmp_coordinate(value: Any, refs: str, limit: float) -> float | None:
    """An XMP GPSCoordinate — ``DDD,MM,SSk`` or ``DDD,MM.mmk``, k one of `refs` (N/S or E/W) — in decimal
    degrees, negative to the south and west; a plain decimal is taken as it is. None when malformed."""
    text = str(value or "").strip().upper()
    if not text:
        return None
    sign = 1.0
    if text[-1] in refs:
        sign = -1.0 if text[-1] == refs[1] else 1.0
        text = text[:-1]
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        return None
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts[1:]):
        return None
    result = sign * sum(p / 60 ** i for i, p in enumerate(parts))
    return round(result, 7) if abs(result) <= limit and result == result else None


def _iso_date(value: Any) -> str:
    """An XMP/IPTC date (``2001-05-19T18:36:41+02:00``, ``2001-05-19``, ``2001``) as ISO, local time kept."""
    from datetime import datetime

    text = str(value or "").strip()
    if text[4:5] == ":":  # EXIF style, 2001:05:19
        text = text.replace(":", "-", 2)
    for size, fmt in ((19, "%Y-%m-%dT%H:%M:%S"), (16, "%Y-%m-%dT%H:%M"), (10, "%Y-%m-%d"), (7, "%Y-%m"), (4, "%Y")):
        try:
            return datetime.strptime(text[:size], fmt).isoformat()
        except ValueError:
            continue
    return ""


def _rating(value: Any) -> int | None:
    try:
        rating = round(float(str(value)))
    except (TypeError, ValueError):
        return None
    return rating if -1 <= rating <= 5 else None


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
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format in ("JPEG", "MPO"):  # Pillow parses the APP13 resources itself
                return {int(k): v for k, v in (image.info.get("photoshop") or {}).items() if isinstance(v, bytes)}
            if image.format == "TIFF":
                blocks = [bytes(image.tag_v2[34377])] if 34377 in image.tag_v2 else []
            else:
                return {}
    except Exception:  # metadata of a file Pillow cannot open is no one's loss here
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


@dataclass(frozen=True)
class SidecarState:
    """What the index needs from an image's sidecar, after pixdex read (and maybe wrote) it."""

    path: bytes | None = None  # None: the image has no sidecar
    signature: str | None = None  # inode:size:mtime of the version read or written (the scanner's view)
    readable: bool = False
    person: list[dict[str, str]] = field(default_factory=list)  # {"name": leaf, "path": "A|B"}
    rejected: list[str] = field(default_factory=list)
    text: str = ""  # keywords, title, description, … for the text index
    error: str | None = None  # why pixdex did not write it (it may still have been read)
    rating: int | None = None
    description: str = ""  # dc:description (x-default), as the sidecar says it
    # When pixdex wrote the keywords into the image itself ([sidecar] embedded): its new stat
    # (dev, inode, size, mtime) and content hash, so the index records them and does not redo the image.
    image_stat: tuple[int, int, int, int] | None = None
    image_digest: str | None = None
    digest: str | None = None  # BLAKE2b of the sidecar's bytes as read (or written)
    lat: float | None = None  # the sidecar's XMP GPS position (a geotagging tool's), degrees
    lon: float | None = None


def effective(machine: list[dict[str, object]], embedded: dict[str, Any], side: SidecarState | None,
              rejected: list[str] = ()  # type: ignore[assignment]
              ) -> tuple[list[dict[str, object]], str, list[str], dict[str, Any]]:
    """The keywords (`tag:`) and the person's text an image is indexed with, its rejected keywords, and
    its rating and description as shown (`{"rating": …, "description": …}`, None when it has none), with
    its position (`lat`, `lon`) when its metadata has one: the image's own GPS (EXIF, else XMP), else the
    sidecar's (a geotagging tool's).

    A readable sidecar speaks for the image, as it does for digiKam (a sidecar's XMP replaces the
    embedded one): its keywords and text. Without one, the image's own reconciled metadata. The
    models' keywords follow, minus those a person rejected and those the person has already."""
    rejected = list(dict.fromkeys([*rejected, *(side.rejected if side else [])]))
    facts = Embedded(**embedded)
    if side is not None and side.readable:
        person = [{"name": p["name"], "confidence": 1.0, "category": "person", "source": "sidecar",
                   **({"path": p["path"]} if "path" in p else {})} for p in side.person]
        text, rating, description = side.text, side.rating, side.description
    else:
        person = [{"name": k, "confidence": 1.0, "category": "person", "source": "image"} for k in facts.keywords]
        text, rating, description = facts.text(), facts.rating, facts.description
    theirs = {str(p["name"]).casefold() for p in person}
    kept = [t for t in machine if t.get("category") != "person" and str(t["name"]) not in rejected
            and str(t["name"]).casefold() not in theirs]
    shown = {"rating": rating, "description": description or None}
    return kept + person, text, rejected, shown | position(facts, side)


def position(facts: Embedded, side: SidecarState | None) -> dict[str, float]:
    """`{"lat": …, "lon": …}` from the image's metadata, else its sidecar's; {} when neither has one."""
    for lat, lon in ((facts.lat, facts.lon), (side.lat, side.lon) if side is not None else (None, None)):
        if lat is not None and lon is not None:
            return {"lat": lat, "lon": lon}
    return {}
