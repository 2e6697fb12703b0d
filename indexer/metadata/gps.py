"""Positions in decimal degrees (north and east positive) from EXIF's GPS block and from XMP.

EXIF keeps degrees, minutes and seconds as rationals with separate N/S/E/W references; XMP's
``exif:GPSLatitude``/``exif:GPSLongitude`` are GPSCoordinates (``48,51.4N``: the reference inside the value).
"""

from __future__ import annotations

from typing import Any


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
