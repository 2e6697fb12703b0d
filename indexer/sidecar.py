"""XMP sidecars: what pixdex learns, where other programs read it; what a person wrote, kept and respected.

The parts, one module each (docs/SIDECARS.md says what is written where, and why):

- `sidecar_naming`: which file is an image's sidecar (``IMG.jpg.xmp``, ``IMG.xmp``, any case; RAW pairs);
- `sidecar_keys`: the properties, as pyexiv2 keys and RDF predicates;
- `sidecar_keywords`: which keywords a sidecar holds and where each goes (all three fields programs read);
- this module: reading a sidecar (`read_state`), and merging pixdex's keywords, description and embedding
  into it (`write_tags`, `edit_person`); a new sidecar starts from the image's own metadata
  (`image_metadata`, MWG-reconciled);
- `sidecar_rdf`: the RDF/XML editor for sidecars exiv2 cannot rewrite faithfully;
- `sidecar_moves`: a sidecar that follows its image (moves, deletions, a RAW that takes ``IMG.xmp``).

Two writers, one result: exiv2 (through pyexiv2) rewrites the packet; when it cannot do so without
changing a triple pixdex does not own (rdf:nodeID, an Alt's order, an odd prefix…), `sidecar_rdf` edits
the XML in place. Both write the same values, each result is checked on the RDF graph (`xmpgraph`), and
both read back the same. Only a packet that is not XMP at all is refused — and still read where its RDF
can be. Writes go through `files.replace_owned`: atomic, keeping mode/owner/xattrs, through symlinks,
never over a concurrent edit (the merge is redone on the new content).

pyexiv2 runs only in worker processes, one call at a time (`exiv2`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.exiv2 import LOCK as _LOCK, exiv2, setup as _setup  # noqa: F401 - embedded_xmp uses them
from pixdex.indexer.files import ChangedMeanwhile, Refused, owned_target, replace_owned, seen
from pixdex.indexer.image_metadata import embedded_metadata, read_embedded  # noqa: F401 - re-exported
from pixdex.indexer.metadata import Embedded, SidecarState, as_list, lang_alt, reconcile, xmp_gps
from pixdex.indexer.scan import content_hash, sidecar_version
from pixdex.indexer.sidecar_keys import (  # noqa: F401 - re-exported: the keys other modules name
    CREATOR, DESCRIBED, DESCRIPTION, EMBEDDING, EMBEDDING_MODEL, EMBEDDING_OF, HIERARCHICAL, IMAGE_ID, LANG_ALT_KEYS,
    LAST_KEYWORDS, MACHINE, METADATA_DATE, MODEL, OURS, OWN_KEYS, PERSON, PIXDEX_NS, REJECTED, SEED_PACKET, SEQ_KEYS,
    SUBJECT, TAGS_LIST, TEXT, TITLE, URIS, uri_of)
from pixdex.indexer.sidecar_keywords import (KeywordPlan, person_paths, plan_keywords,  # noqa: F401
                                             rejected_now, removed_person)
from pixdex.indexer.sidecar_naming import sidecar_path  # noqa: F401 - re-exported

TRIES = 4
NODE_ID = re.compile(rb"[:\s]nodeID\s*=")
_before_replace: Callable[[Path], None] | None = None  # tests: play a concurrent writer here


# Reading -------------------------------------------------------------------------------------
def read_props(data: bytes) -> dict[str, Any]:
    """A packet's properties in pyexiv2's form. From exiv2, unless exiv2 refuses the packet or would read it
    wrong (rdf:nodeID): then from its RDF graph. Raises SidecarError when neither can read it."""
    from pixdex.indexer.xmpgraph import NotRdf, props_of_graph

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
                        digest=_digest(path, data), lat=lat, lon=lon)


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


# A new sidecar -------------------------------------------------------------------------------
SEEDED = {  # a new sidecar's fields taken from the image's reconciled metadata
    "title": TITLE, "description": DESCRIPTION, "creator": CREATOR, "rating": "Xmp.xmp.Rating",
    "headline": "Xmp.photoshop.Headline", "city": "Xmp.photoshop.City", "state": "Xmp.photoshop.State",
    "country": "Xmp.photoshop.Country", "sublocation": "Xmp.iptc.Location",
}


def _seed(image: Path) -> tuple[bytes, dict[str, Any], str | None]:
    """A new sidecar's first packet — the image's embedded XMP when it is RDF — the values the MWG
    reconciliation sets on top (IPTC keywords an XMP-blind program changed, EXIF's description, …), and
    the image's content hash (None when it cannot be read)."""
    from pixdex.indexer.xmpgraph import NotRdf, graph_of

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


# Embeddings that travel with the photo ----------------------------------------------------------
def encode_embedding(vector: Any) -> str:
    """``f16:<dim>:<first 16 hex of sha256 of the f16 bytes>:<base64 of the f16 bytes, little-endian>``."""
    import base64
    import hashlib

    import numpy as np

    raw = np.asarray(vector, dtype="<f2").reshape(-1).tobytes()
    return f"f16:{len(raw) // 2}:{hashlib.sha256(raw).hexdigest()[:16]}:{base64.b64encode(raw).decode()}"


def read_embedding(xmp: dict[str, Any], model_id: str, content_hash: str) -> Any:
    """The embedding a sidecar holds for `model_id` and the image content `content_hash` (float32, unit
    length), or None: absent, of another model or another content, or failing its checksum."""
    import base64
    import binascii
    import hashlib

    import numpy as np

    if not model_id or str(xmp.get(EMBEDDING_MODEL) or "") != model_id or str(xmp.get(EMBEDDING_OF) or "") != content_hash:
        return None
    try:  # anything malformed is no embedding (the image is then embedded by the model), never an error
        dtype, dim, checksum, payload = str(xmp.get(EMBEDDING) or "").split(":", 3)
        raw = base64.b64decode(payload, validate=True)
        if dtype != "f16" or len(raw) != 2 * int(dim) or hashlib.sha256(raw).hexdigest()[:16] != checksum:
            return None
    except (ValueError, binascii.Error):
        return None
    vector = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 and np.isfinite(norm) else None


# Writing -------------------------------------------------------------------------------------
Planner = Callable[[dict[str, Any]], tuple[KeywordPlan, dict[str, Any]]]  # → keywords, other values (None: delete)


def write_tags(image: Path, tags: list[str], parent: str, model_id: str, naming: str = "image.ext.xmp",
               description: str | None = None, rejected: Iterable[str] = (),
               embedding: tuple[str, str, Any] | None = None, text: str | None = None,
               image_id: int | None = None) -> SidecarState:
    """Merge pixdex's machine keywords (and its description and the text read in the image, if any) into
    the image's sidecar. Returns
    what the sidecar says now. Raises SidecarError when it cannot be read or faithfully rewritten.
    `embedding`: (CLIP model id, the image content's hash, vector), stored so the photo carries it;
    `image_id`: its catalog id (`pixdex:Id`), which a rebuild or another machine gives it again."""
    also_rejected = list(rejected)

    def plan(xmp: dict[str, Any]) -> tuple[KeywordPlan, dict[str, Any]]:
        keywords = plan_keywords(xmp, tags, parent, also_rejected=also_rejected)
        values: dict[str, Any] = {MODEL: model_id}
        if image_id is not None:
            values[IMAGE_ID] = str(image_id)
        if embedding is not None:
            clip_id, content_hash, vector = embedding
            values.update({EMBEDDING_MODEL: clip_id, EMBEDDING_OF: content_hash,
                           EMBEDDING: encode_embedding(vector)})
        if description is not None:
            current, ours = lang_alt(xmp.get(DESCRIPTION)), str(xmp.get(DESCRIBED) or "")
            if not current or current == ours:
                values[DESCRIPTION] = {'lang="x-default"': description} if description else None
                values[DESCRIBED] = description or None
        if text is not None:
            values[TEXT] = text or None
        return keywords, values

    return _rewrite(image, parent, naming, plan, create=bool(tags) or bool(description) or embedding is not None)


def edit_person(image: Path, add: list[str], remove: list[str], description: str | None, parent: str,
                naming: str = "image.ext.xmp") -> SidecarState:
    """A person's edit through pixdex (PATCH /items): keywords added as their own (in all three fields),
    keywords removed from every field — a machine keyword removed is rejected for good — and the
    description set (None: unchanged; "": emptied). Everything else in the sidecar is kept."""
    def plan(xmp: dict[str, Any]) -> tuple[KeywordPlan, dict[str, Any]]:
        machine = [t for t in as_list(xmp.get(MACHINE)) if t not in add]
        keywords = plan_keywords(xmp, machine, parent, extra_person=add, remove=remove)
        values: dict[str, Any] = {}
        if description is not None:
            values[DESCRIPTION] = {'lang="x-default"': description} if description else None
            values[DESCRIBED] = None  # the person's now
        return keywords, values

    return _rewrite(image, parent, naming, plan, create=True)


def _rewrite(image: Path, parent: str, naming: str, plan: Planner, create: bool,
             path: Path | None = None) -> SidecarState:
    """Merge `plan`'s values into the image's sidecar (or `path`), created when absent and `create`."""
    if not os.path.lexists(image) and path is None:  # deleted (or moved) meanwhile: the scanner's business now
        return SidecarState()
    path = path or sidecar_path(image, naming)
    for _attempt in range(TRIES):
        try:
            target = owned_target(path)
        except Refused as exc:
            raise SidecarError(path, f"{exc}; left untouched") from None
        try:
            data: bytes | None = target.read_bytes()
            was = seen(os.stat(target))
        except FileNotFoundError:
            data, was = None, None
        except OSError as exc:
            raise SidecarError(path, f"cannot read sidecar: {exc.strerror}") from exc
        if data is None and not create:
            return SidecarState()
        payload, state_xmp, adopted = _merged(path, image, data, plan, parent)
        if payload is None:
            return state_of(path, state_xmp, parent, data=data)
        if _before_replace is not None:
            _before_replace(path)
        try:
            replace_owned(path, payload, was)
        except ChangedMeanwhile:
            continue  # another program wrote it meanwhile: merge again, on top of what it wrote
        except Refused as exc:
            raise SidecarError(path, f"{exc}; left untouched") from None
        except OSError as exc:
            raise SidecarError(path, f"cannot write sidecar: {exc.strerror or exc}") from exc
        return state_of(path, state_xmp, parent, error=_release(image, adopted, parent), data=payload)
    raise SidecarError(path, f"changed again each of {TRIES} times pixdex merged into it; left untouched "
                             "(tried again at its next change)")


def _release(image: Path, adopted: Path | None, parent: str) -> str | None:
    """The image's keywords were carried out of the ``IMG.xmp`` it shared (`sidecar_moves.adopted`): take
    pixdex's own out of it. Returns why that could not be done (None: done, or nothing to do)."""
    from pixdex.indexer.sidecar_moves import release

    if adopted is None:
        return None
    try:
        release(image, adopted, parent)
    except SidecarError as exc:
        return f"pixdex's keywords stay in {adopted.name}: {exc.reason}"
    return None


def _merged(path: Path, image: Path, data: bytes | None, plan: Planner,
            parent: str) -> tuple[bytes | None, dict[str, Any], Path | None]:
    """The new packet (None: nothing to change), the properties it holds, and the ``IMG.xmp`` a new
    sidecar took the person's keywords from (None: none)."""
    from pixdex.indexer.sidecar_moves import adopted

    seed_values: dict[str, Any] = {}
    carried: Path | None = None
    digest: str | None = None
    new = data is None
    if data is None:
        data, seed_values, digest = _seed(image)
    try:
        xmp = read_props(data)
    except SidecarError as exc:
        raise SidecarError(path, f"sidecar is {exc.reason}; left untouched") from None
    if new:
        carried, seed_values = adopted(image, digest, parent, xmp, seed_values)
    keywords, values = plan({**xmp, **seed_values})
    values = {**{k: v for k, v in seed_values.items() if k not in keywords.values()}, **keywords.values(), **values}
    if all(_same(xmp.get(k), v) for k, v in values.items()) and not seed_values:
        return None, xmp, None
    values[METADATA_DATE] = datetime.now().astimezone().isoformat(timespec="seconds")
    payload, after = _written(path, data, values)
    return payload, after, carried


def _written(path: Path, data: bytes, values: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
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
            doc.modify_xmp(_pyexiv2_values(values))
            payload: bytes = doc.get_bytes()
        except (RuntimeError, UnicodeDecodeError) as exc:
            raise SidecarError(path, f"sidecar is not valid XMP ({str(exc).strip()}); left untouched") from exc
    return payload


def _rdf_written(path: Path, data: bytes, values: dict[str, Any]) -> bytes:
    from pixdex.indexer.sidecar_rdf import NotXmp, edit_packet

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
    wrong = [k for k, v in values.items() if not _same(after.get(k), v)]
    if wrong:
        raise SidecarError(path, f"the rewritten sidecar does not read back as written ({', '.join(wrong[:3])}); "
                                 "left untouched")
    return payload, after


def _same(current: Any, wanted: Any) -> bool:
    if wanted is None:
        return current is None
    if isinstance(wanted, list):
        return as_list(current) == wanted
    if isinstance(wanted, dict):
        return isinstance(current, dict) and lang_alt(current) == lang_alt(wanted) and len(current) == len(wanted)
    return str(current or "") == str(wanted)


def _pyexiv2_values(values: dict[str, Any]) -> dict[str, Any]:
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
    from pixdex.indexer.xmpgraph import NotRdf, changed_triples

    try:
        changes = changed_triples(before, after, [uri_of(k) for k in changed_keys])
    except NotRdf as exc:
        raise SidecarError(path, f"cannot check the rewrite of {what} as RDF ({exc}); left untouched") from None
    if changes:
        raise SidecarError(path, f"cannot rewrite {what} without changing what pixdex does not own ("
                                 + "; ".join(changes[:2]) + f"); {outcome}")
