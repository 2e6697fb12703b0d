"""What a person (or their camera, or another program) already wrote inside an image: keywords,
title, description, creator, rating, headline and location — reconciled across XMP, IPTC and EXIF
with the Metadata Working Group's rules, as exiftool's MWG module applies them:

- keywords, title, creator, location: XMP when it has the field and the IPTC block is in sync
  with it (no stored IPTC digest, or a digest that matches the IPTC data: `photoshop.iptc_in_sync`);
  else IPTC. An IPTC block changed by a program that does not know XMP (digest mismatch) wins over
  stale XMP.
- description and creator: EXIF (ImageDescription, Artist) first when not blank, then XMP/IPTC as above.
- GPS position: EXIF's first, then XMP's (`gps`); a sidecar's counts when the image has neither.

MWG.jpg in the exiftool corpus holds a WRONG value in every field that loses; tests check none of
them is indexed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pixdex.indexer.metadata.gps import exif_gps, xmp_gps

XMP_FIRST = {  # field → (XMP key, IPTC key)
    "title": ("Xmp.dc.title", "Iptc.Application2.ObjectName"),
    "headline": ("Xmp.photoshop.Headline", "Iptc.Application2.Headline"),
    "city": ("Xmp.photoshop.City", "Iptc.Application2.City"),
    "sublocation": ("Xmp.iptc.Location", "Iptc.Application2.SubLocation"),
    "state": ("Xmp.photoshop.State", "Iptc.Application2.ProvinceState"),
    "country": ("Xmp.photoshop.Country", "Iptc.Application2.CountryName"),
    "country_code": ("Xmp.iptc.CountryCode", "Iptc.Application2.CountryCode"),
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
    country_code: str = ""  # ISO 3166 (Iptc4xmpCore:CountryCode)
    created: str = ""  # ISO date from XMP/IPTC (photoshop:DateCreated, xmp:CreateDate, IPTC DateCreated)
    lat: float | None = None  # degrees, north positive: EXIF GPS, else XMP's
    lon: float | None = None  # degrees, east positive
    warnings: list[str] = field(default_factory=list)  # what could not be read as written (image_metadata)
    label: str = ""  # xmp:Label, the colour label (Red, Yellow, Green, Blue, Purple: Lightroom, darktable, digiKam)

    def text(self) -> str:
        """Everything a text search should find, once each."""
        parts = [*self.keywords, self.title, self.headline, self.description, *self.creator,
                 self.sublocation, self.city, self.state, self.country, self.country_code]
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
                    label=lang_alt(xmp.get("Xmp.xmp.Label"))[:40],
                    lat=lat, lon=lon, **values)


def _iso_date(value: Any) -> str:
    """An XMP/IPTC date (``2001-05-19T18:36:41+02:00``, ``2001-05-19``, ``2001``) as ISO, local time kept."""
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
