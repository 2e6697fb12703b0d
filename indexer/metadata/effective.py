"""What an image is indexed with: its sidecar's keywords and text when it has a readable one (as digiKam reads
it: a sidecar's XMP replaces the embedded one), else its own reconciled metadata; the models' keywords follow,
minus those a person rejected or has already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pixdex.indexer.metadata.reconcile import Embedded
from pixdex.indexer.places import FIELDS, Place
from pixdex.indexer.sidecars.state import SidecarState


def effective(machine: list[dict[str, object]], embedded: dict[str, Any], side: SidecarState | None,
              rejected: Sequence[str] = (), geo: dict[str, str] | None = None
              ) -> tuple[list[dict[str, object]], str, list[str], dict[str, Any]]:
    """The keywords (`tag:`) and the person's text an image is indexed with, its rejected keywords, and
    its rating, description and colour label as shown (`{"rating": …, "description": …, "label": …}`, None when it
    has none), with
    its position (`lat`, `lon`) when its metadata has one: the image's own GPS (EXIF, else XMP), else the
    sidecar's (a geotagging tool's); and its place (`place`: the person's location fields, GeoNames' where they
    have none; `geo`: GeoNames' place of the position — the sidecar job's, else `geo`, what the row had).

    A readable sidecar speaks for the image, as it does for digiKam (a sidecar's XMP replaces the
    embedded one): its keywords and text. Without one, the image's own reconciled metadata. The
    models' keywords follow, minus those a person rejected and those the person has already."""
    rejected = list(dict.fromkeys([*rejected, *(side.rejected if side else [])]))
    facts = Embedded(**embedded)
    if side is not None and side.readable:
        person = [{"name": p["name"], "confidence": 1.0, "category": "person", "source": "sidecar",
                   **({"path": p["path"]} if "path" in p else {})} for p in side.person]
        text, rating, description, label = side.text, side.rating, side.description, side.label
    else:
        person = [{"name": k, "confidence": 1.0, "category": "person", "source": "image"} for k in facts.keywords]
        text, rating, description, label = facts.text(), facts.rating, facts.description, facts.label
    theirs = {str(p["name"]).casefold() for p in person}
    kept = [t for t in machine if t.get("category") != "person" and str(t["name"]) not in rejected
            and str(t["name"]).casefold() not in theirs]
    shown = {"rating": rating, "description": description or None, "label": label or None}
    return kept + person, text, rejected, shown | position(facts, side) | places(facts, side, geo)


def places(facts: Embedded, side: SidecarState | None, geo: dict[str, str] | None) -> dict[str, Any]:
    """`place`: the person's location (the sidecar's fields, then the image's) with GeoNames' values where they have
    none; `geo`: GeoNames' place (None: none)."""
    own = Place.of({f: getattr(facts, f) for f in FIELDS})
    if side is not None and side.readable:
        own = Place.of(side.location).merged(own)
    found = Place.of(side.place if side is not None and side.place is not None else geo)
    return {"place": own.merged(found).as_dict() or None, "geo": found.as_dict() or None}


def position(facts: Embedded, side: SidecarState | None) -> dict[str, float]:
    """`{"lat": …, "lon": …}` from the image's metadata, else its sidecar's; {} when neither has one."""
    for lat, lon in ((facts.lat, facts.lon), (side.lat, side.lon) if side is not None else (None, None)):
        if lat is not None and lon is not None:
            return {"lat": lat, "lon": lon}
    return {}
