"""A new sidecar's first packet: the image's own metadata, and what a RAW took over from it.

A sidecar pixdex creates starts from the image's embedded XMP (when it is RDF), with the values the MWG
reconciliation sets on top (IPTC keywords an XMP-blind program changed, EXIF's description, …).

The RAW rule (Lightroom's, docs/SIDECARS.md): ``IMG.xmp`` belongs to the RAW when there is one. A JPEG that
used ``IMG.xmp`` while it was alone gets its own ``IMG.JPG.xmp`` once ``IMG.CR2`` appears; that new sidecar
starts with the person's keywords (and rejections) from ``IMG.xmp``, which keeps them (`adopted`), and
pixdex's own keywords and record then leave ``IMG.xmp`` (`merge.release`: they were made for the JPEG). Which
``IMG.xmp`` was the JPEG's: one with pixdex's record in it whose embedding, when it has one, was made from
this very JPEG. A person's ``IMG.xmp`` for the RAW (pixdex never wrote in it) lends a copy of its keywords
to a JPEG beside the RAW that has no sidecar yet, and is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pixdex.indexer.digest import content_hash
from pixdex.indexer.errors import SidecarError
from pixdex.indexer.metadata.image import read_embedded
from pixdex.indexer.metadata.reconcile import Embedded, as_list
from pixdex.indexer.sidecars.graph import NotRdf, graph_of
from pixdex.indexer.sidecars.keys import (
    CREATOR,
    DESCRIPTION,
    EMBEDDING_OF,
    HIERARCHICAL,
    LABEL,
    LANG_ALT_KEYS,
    MACHINE,
    MODEL,
    REJECTED,
    SEED_PACKET,
    SUBJECT,
    TITLE,
)
from pixdex.indexer.sidecars.keywords import escape_level, person_paths, rejected_now
from pixdex.indexer.sidecars.naming import folder_names, is_raw_name, siblings, sidecar_name_of, stem_sidecar_name
from pixdex.indexer.sidecars.read import read_sidecar

SEEDED = {  # a new sidecar's fields taken from the image's reconciled metadata
    "title": TITLE, "description": DESCRIPTION, "creator": CREATOR, "rating": "Xmp.xmp.Rating",
    "headline": "Xmp.photoshop.Headline", "city": "Xmp.photoshop.City", "state": "Xmp.photoshop.State",
    "country": "Xmp.photoshop.Country", "sublocation": "Xmp.iptc.Location", "country_code": "Xmp.iptc.CountryCode",
}


# What a person sets on an image beside its keywords, carried with them into the image's own new sidecar (the places
# are left out: pixdex's own are recorded apart and made again from the GPS).
PERSONS_FIELDS = (TITLE, DESCRIPTION, CREATOR, "Xmp.xmp.Rating", LABEL, "Xmp.photoshop.Headline")


def seed(image: Path) -> tuple[bytes, dict[str, Any], str | None]:
    """A new sidecar's first packet — the image's embedded XMP when it is RDF — the values the MWG
    reconciliation sets on top (IPTC keywords an XMP-blind program changed, EXIF's description, …), and
    the image's content hash (None when it cannot be read)."""
    try:
        data = image.read_bytes()
    except OSError:
        return SEED_PACKET, {}, None
    facts, raw = read_embedded(data)
    packet = SEED_PACKET
    if raw.strip():
        try:
            graph_of(raw)
            packet = raw
        except NotRdf:
            packet = SEED_PACKET
    return packet, _seed_values(facts), content_hash(data)


def _seed_values(facts: Embedded) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if facts.keywords:
        values[SUBJECT] = facts.keywords
    for name, key in SEEDED.items():
        value = getattr(facts, name)
        if value in ("", [], None):
            continue
        if key in LANG_ALT_KEYS:
            values[key] = {'lang="x-default"': value}
        elif key == CREATOR:
            values[key] = value
        else:
            values[key] = str(value)
    return values


def adopted(image: Path, digest: str | None, parent: str, xmp: dict[str, Any],
            seeded: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """For a new sidecar of `image` (whose first packet holds `xmp`, with `seeded` set on top): the ``IMG.xmp``
    the image used before another file took it, and `seeded` with the person's keywords and rejections from
    it added. (None, `seeded`) when there is no such sidecar.

    A RAW+JPEG pair's ``IMG.xmp`` that a person's program wrote for the RAW (pixdex does not index RAW files)
    lends its keywords too, so the shot is found by them through its JPEG: they are copied into the JPEG's new
    sidecar, and ``IMG.xmp`` is left as it is (None is returned for it: nothing to release)."""
    names = folder_names(os.fsencode(image.parent))
    found = siblings(names)
    name = stem_sidecar_name(os.fsencode(image.name), names, found)
    if name is None or name == sidecar_name_of(os.fsencode(image.name), names, found):
        return None, seeded
    path = image.with_name(os.fsdecode(name))
    try:
        before = read_sidecar(path)
    except SidecarError:
        return None, seeded
    made_for = str(before.get(EMBEDDING_OF) or "")
    pixdex_wrote = bool(before.get(MODEL) or before.get(MACHINE))
    if not pixdex_wrote and not _beside_its_raw(image, names):
        return None, seeded  # pixdex never wrote it for an image, and it is no RAW's
    if pixdex_wrote and made_for and digest and made_for != digest:
        return None, seeded  # pixdex wrote it for another content
    paths = person_paths(before, parent)
    subject = as_list(seeded[SUBJECT] if SUBJECT in seeded else xmp.get(SUBJECT))
    carried = {
        SUBJECT: list(dict.fromkeys([*subject, *(p[-1] for p in paths)])),
        HIERARCHICAL: list(dict.fromkeys([*as_list(xmp.get(HIERARCHICAL)),
                                          *("|".join(escape_level(level) for level in p) for p in paths)])),
        REJECTED: list(dict.fromkeys([*as_list(xmp.get(REJECTED)), *rejected_now(before, parent)])),
    }
    if pixdex_wrote:  # it was this image's own sidecar: what the person set there comes along (a rating, a label…)
        carried |= {key: before[key] for key in PERSONS_FIELDS
                    if key in before and key not in seeded and key not in xmp}
    return (path if pixdex_wrote else None), {**seeded, **carried}


def _beside_its_raw(image: Path, names: set[bytes]) -> bool:
    """Whether a RAW file with the image's stem (any case) is in its folder."""
    stem = os.path.splitext(os.fsencode(image.name))[0].lower()
    return any(is_raw_name(name) and os.path.splitext(name)[0].lower() == stem for name in names)
