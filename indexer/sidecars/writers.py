"""Two writers, one result: exiv2 (through pyexiv2) rewrites the packet; when it cannot do so without changing a
triple pixdex does not own (rdf:nodeID, an Alt's order, an odd prefix…), `rdf` edits the XML in place. Both
write the same values, each result is checked on the RDF graph (`check_graph`, `graph.changed_triples`), and
both must read back as written. Only a packet that is not XMP at all is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.exiv2 import exiv2
from pixdex.indexer.metadata.reconcile import as_list, lang_alt
from pixdex.indexer.sidecars.graph import NotRdf, changed_triples
from pixdex.indexer.sidecars.keys import TAGS_LIST, uri_of
from pixdex.indexer.sidecars.rdf import NotXmp, edit_packet
from pixdex.indexer.sidecars.read import NODE_ID, read_props


def written(path: Path, data: bytes, values: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """`data` with `values` set, and what it reads back as: by exiv2 when it keeps every triple pixdex does
    not own, else by the RDF/XML editor. Raises SidecarError when neither can (the packet is not XMP)."""
    refusals = []
    for writer in _WRITERS:
        try:
            payload = writer(path, data, values)
            check_graph(path, data, payload, list(values))
            return _read_back(path, payload, values)
        except SidecarError as exc:
            refusals.append(exc.reason)
    raise SidecarError(path, refusals[-1])


def _exiv2_written(path: Path, data: bytes, values: dict[str, Any]) -> bytes:
    if NODE_ID.search(data):
        raise SidecarError(path, "sidecar uses rdf:nodeID, which exiv2 would drop; left untouched")
    with exiv2() as pyexiv2:
        try:
            doc = pyexiv2.ImageData(data)
            xmp = dict(doc.read_xmp())
            # exiv2 mirrors a sidecar's XMP into EXIF and IPTC on read and back on write, which
            # resurrects deleted dc:subject entries and mangles exif:ExifVersion. Clearing EXIF first,
            # then IPTC, stops both (the other order lets the IPTC write copy EXIF back).
            doc.clear_exif()
            doc.clear_iptc()
            doc.modify_xmp({k: None for k in values if k in xmp})
            doc.modify_xmp(pyexiv2_values(values))
            payload: bytes = doc.get_bytes()
        except (RuntimeError, UnicodeDecodeError) as exc:
            raise SidecarError(path, f"sidecar is not valid XMP ({str(exc).strip()}); left untouched") from exc
    return payload


def _rdf_written(path: Path, data: bytes, values: dict[str, Any]) -> bytes:
    try:
        return edit_packet(data, values)
    except NotXmp as exc:
        raise SidecarError(path, f"sidecar is not valid XMP ({exc}); left untouched") from None


_WRITERS: tuple[Callable[[Path, bytes, dict[str, Any]], bytes], ...] = (_exiv2_written, _rdf_written)


def _read_back(path: Path, payload: bytes, values: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """`payload` and its properties, once it reads back as holding `values` (a writer that got one wrong is
    refused)."""
    try:
        after = read_props(payload)
    except SidecarError as exc:
        raise SidecarError(path, f"the rewritten sidecar does not read back ({exc.reason}); left untouched") \
            from None
    wrong = [k for k, v in values.items() if not same(after.get(k), v)]
    if wrong:
        raise SidecarError(path, f"the rewritten sidecar does not read back as written ({', '.join(wrong[:3])}); "
                                 "left untouched")
    return payload, after


def same(current: Any, wanted: Any) -> bool:
    if wanted is None:
        return current is None
    if isinstance(wanted, list):
        return as_list(current) == wanted
    if isinstance(wanted, dict):
        return isinstance(current, dict) and lang_alt(current) == lang_alt(wanted) and len(current) == len(wanted)
    return str(current or "") == str(wanted)


def pyexiv2_values(values: dict[str, Any]) -> dict[str, Any]:
    """pyexiv2's form: Bags spelled out (a plain list is written as a Seq), TagsList as the Seq it is."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or value == []:
            continue
        if isinstance(value, list) and key not in (TAGS_LIST, "Xmp.dc.creator"):
            out[key] = 'type="Bag"'
            out.update({f"{key}[{i}]": v for i, v in enumerate(value, 1)})
        else:
            out[key] = value
    return out


def check_graph(path: Path, before: bytes, after: bytes, changed_keys: list[str], what: str = "this sidecar",
                outcome: str = "left untouched, still indexed") -> None:
    """Refuse (SidecarError) a rewrite that changes any triple outside `changed_keys` (pyexiv2 keys)."""
    try:
        changes = changed_triples(before, after, [uri_of(k) for k in changed_keys])
    except NotRdf as exc:
        raise SidecarError(path, f"cannot check the rewrite of {what} as RDF ({exc}); left untouched") from None
    if changes:
        raise SidecarError(path, f"cannot rewrite {what} without changing what pixdex does not own ("
                                 + "; ".join(changes[:2]) + f"); {outcome}")
