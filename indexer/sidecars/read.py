"""Reading a sidecar: its properties in pyexiv2's form, and what the index needs of it (`SidecarState`).

exiv2 reads a packet unless it refuses it or would read it wrong (``rdf:nodeID``): then its RDF graph is
read instead (`graph.props_of_graph`), so a packet exiv2 cannot parse still gives its keywords, captions
and pixdex's own record. pyexiv2 runs only in worker processes (`exiv2`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pixdex.indexer.digest import content_hash
from pixdex.indexer.errors import SidecarError
from pixdex.indexer.exiv2 import exiv2
from pixdex.indexer.metadata.gps import xmp_gps
from pixdex.indexer.metadata.reconcile import Embedded, reconcile
from pixdex.indexer.sidecars.graph import NotRdf, props_of_graph
from pixdex.indexer.sidecars.keywords import person_paths, rejected_now
from pixdex.indexer.sidecars.location import person_location
from pixdex.indexer.sidecars.naming import sidecar_path
from pixdex.indexer.sidecars.state import SidecarState, sidecar_version

NODE_ID = re.compile(rb"[:\s]nodeID\s*=")


def read_props(data: bytes) -> dict[str, Any]:
    """A packet's properties in pyexiv2's form. From exiv2, unless exiv2 refuses the packet or would read it
    wrong (rdf:nodeID): then from its RDF graph. Raises SidecarError when neither can read it."""
    exiv2_error = "it uses rdf:nodeID"
    if not NODE_ID.search(data):
        with exiv2() as pyexiv2:
            try:
                props: dict[str, Any] = dict(pyexiv2.ImageData(data).read_xmp())
                return props
            except (RuntimeError, UnicodeDecodeError) as exc:
                exiv2_error = str(exc).strip()
    try:
        return props_of_graph(data)
    except NotRdf as exc:
        raise SidecarError(Path("?"), f"not valid XMP ({exiv2_error}; {exc})") from None


def state_of(path: Path, xmp: dict[str, Any], parent: str, error: str | None = None,
             data: bytes | None = None) -> SidecarState:
    person = person_paths(xmp, parent)
    leaves = [p[-1] for p in person]
    facts = reconcile(xmp, {}, {})
    text = Embedded(leaves, facts.title, facts.description, facts.creator, facts.rating, facts.headline,
                    facts.city, facts.sublocation, facts.state, facts.country).text()
    lat, lon = xmp_gps(xmp)
    return SidecarState(os.fsencode(path), sidecar_version(path), True,
                        [{"name": p[-1], **({"path": "|".join(p)} if len(p) > 1 else {})} for p in person],
                        rejected_now(xmp, parent), text, error, facts.rating, facts.description,
                        label=facts.label, digest=_digest(path, data), lat=lat, lon=lon,
                        location=person_location(xmp).as_dict())


def _digest(path: Path, data: bytes | None) -> str | None:
    if data is None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
    return content_hash(data)


def read_state(image: Path, parent: str, naming: str = "image.ext.xmp", error: str | None = None) -> SidecarState:
    """Read the image's sidecar without changing it."""
    path = sidecar_path(image, naming)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return SidecarState(error=error)
    except OSError as exc:
        return SidecarState(os.fsencode(path), sidecar_version(path), error=error or f"cannot read: {exc.strerror}")
    try:
        xmp = read_props(data)
    except SidecarError as exc:
        return SidecarState(os.fsencode(path), sidecar_version(path), error=error or exc.reason)
    return state_of(path, xmp, parent, error, data)


def read_sidecar(path: Path) -> dict[str, Any]:
    """The XMP properties of an existing sidecar ({} when there is none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SidecarError(path, f"cannot read sidecar: {exc.strerror}") from exc
    try:
        return read_props(data)
    except SidecarError as exc:
        raise SidecarError(path, f"sidecar is {exc.reason}; left untouched") from None
