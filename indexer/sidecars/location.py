"""Where a photo was taken, in its sidecar's standard location fields — `photoshop:City`, `photoshop:State`,
`photoshop:Country`, `Iptc4xmpCore:CountryCode` — filled from GPS (`places.place_at`) only where the person has
none, in the sidecar or in the image.

pixdex records each value it wrote (`pixdex:City`, …). A field whose value differs from that record is the
person's: kept, never written over, and pixdex forgets its record (a later edit wins). A field still holding
pixdex's value follows the GPS when that moves. A field the person deleted stays deleted: its record becomes
`REMOVED`, and pixdex fills it no more (as a machine keyword the person removed is not added again).
"""

from __future__ import annotations

from typing import Any

from pixdex.indexer.metadata.reconcile import lang_alt
from pixdex.indexer.places import FIELDS, Place
from pixdex.indexer.sidecars.keys import LOCATION, LOCATION_OURS

REMOVED = "(removed by the person)"  # pixdex's record of a field the person deleted


def person_location(xmp: dict[str, Any]) -> Place:
    """The location fields of a sidecar that the person wrote (those not holding what pixdex wrote)."""
    values = {}
    for name in FIELDS:
        value, ours = lang_alt(xmp.get(LOCATION[name])), lang_alt(xmp.get(LOCATION_OURS[name]))
        if value and value != ours and not (ours == REMOVED and value == REMOVED):
            values[name] = value
    return Place.of(values)


def location_values(xmp: dict[str, Any], found: Place, own: Place) -> dict[str, Any]:
    """The values to merge into a sidecar for the place `found` from GPS, given the person's location in the
    image itself (`own`): each field the person has in neither gets GeoNames' value (None: delete)."""
    theirs = person_location(xmp).merged(own)
    values: dict[str, Any] = {}
    for name in FIELDS:
        ours = lang_alt(xmp.get(LOCATION_OURS[name]))
        if ours == REMOVED and not getattr(theirs, name):
            continue  # the person deleted what pixdex wrote: it stays deleted
        if ours and not lang_alt(xmp.get(LOCATION[name])) and not getattr(own, name):
            values[LOCATION_OURS[name]] = REMOVED  # deleted since pixdex wrote it
            continue
        if getattr(theirs, name):
            if ours:
                values[LOCATION_OURS[name]] = None  # the person's value now: pixdex's record goes
            continue
        value = getattr(found, name) or None
        if value or ours:  # a field pixdex filled follows the place (or goes with it)
            values[LOCATION[name]] = value
            values[LOCATION_OURS[name]] = value
    return values
