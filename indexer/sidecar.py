"""XMP sidecars: what pixdex learns, where other programs read it; what a person wrote, kept and respected.

Where keywords go (docs/SIDECARS.md has the full list of pixdex's properties):

- Each program reads one field: digiKam the first non-empty of ``digiKam:TagsList`` →
  ``MicrosoftPhoto:LastKeywordXMP`` → ``lr:hierarchicalSubject`` → ``dc:subject``; darktable
  ``lr:hierarchicalSubject``, else ``dc:subject``; Immich TagsList ?? HierarchicalSubject ?? Keywords.
  So every keyword a person has in any of them is written to all three: flat (its leaf) in
  ``dc:subject``, as its own path in ``lr:hierarchicalSubject`` (``A|B``) and ``digiKam:TagsList``
  (an ``rdf:Seq``, ``A/B``). pixdex's machine keywords go under ``<tag_parent>`` (default ``pixdex``)
  in the two hierarchical fields and flat in ``dc:subject``. A ``/`` or ``|`` inside one level of a
  path becomes ``∕`` (U+2215) or ``¦`` (U+00A6), so it cannot become a level of its own.
- pixdex's own record (namespace ``https://pixdex.dev/ns/1.0/``): ``pixdex:Tags`` (the dc:subject
  entries pixdex added), ``pixdex:Machine`` (its machine keywords as last written),
  ``pixdex:Rejected`` (machine keywords a person removed: never added again), ``pixdex:Description``
  (the description pixdex wrote last), ``pixdex:Model``.
- A machine keyword missing from any of the fields pixdex put it in was removed by a person, in some
  program: it is recorded as rejected. One a person adds back by hand is theirs from then on.
- A description is written only while ``dc:description`` is empty or still exactly pixdex's.
- A new sidecar starts from the image's embedded XMP, with keywords, description, title, creator,
  rating, headline and location reconciled across XMP/IPTC/EXIF by the MWG rules (`metadata`).

Every rewrite is checked on the RDF graph (`xmpgraph`): if exiv2 would change a single triple
pixdex does not own, the sidecar is left as it is, with the reason — and still read and indexed.
Writes go through `files.replace_owned`: atomic, keeping mode/owner/xattrs, through symlinks,
never over a concurrent edit (the merge is redone on the new content).

pyexiv2 shares global state and holds the GIL, so every call goes through `_LOCK` and callers run
this in a worker process, never in the serving process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyexiv2

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.files import ChangedMeanwhile, Refused, owned_target, replace_owned, seen
from pixdex.indexer.metadata import Embedded, SidecarState, as_list, iptc_in_sync, lang_alt, reconcile
from pixdex.indexer.scan import sidecar_version

PIXDEX_NS = "https://pixdex.dev/ns/1.0/"
SEED_PACKET = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
               '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
               'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
               '<?xpacket end="w"?>').encode()
SUBJECT, HIERARCHICAL, TAGS_LIST = "Xmp.dc.subject", "Xmp.lr.hierarchicalSubject", "Xmp.digiKam.TagsList"
LAST_KEYWORDS, DESCRIPTION, METADATA_DATE = "Xmp.MicrosoftPhoto.LastKeywordXMP", "Xmp.dc.description", \
    "Xmp.xmp.MetadataDate"
OURS, MACHINE, REJECTED = "Xmp.pixdex.Tags", "Xmp.pixdex.Machine", "Xmp.pixdex.Rejected"
PERSON = "Xmp.pixdex.Person"  # the person's keyword paths as pixdex last wrote them to all three fields
DESCRIBED, MODEL = "Xmp.pixdex.Description", "Xmp.pixdex.Model"
TEXT = "Xmp.pixdex.Text"  # the text a vision LLM read in the image
EMBEDDING, EMBEDDING_MODEL, EMBEDDING_OF = "Xmp.pixdex.Embedding", "Xmp.pixdex.EmbeddingModel", "Xmp.pixdex.EmbeddingOf"
URIS = {  # the RDF predicates behind pyexiv2's keys, for the graph check
    SUBJECT: "http://purl.org/dc/elements/1.1/subject",
    DESCRIPTION: "http://purl.org/dc/elements/1.1/description",
    "Xmp.dc.title": "http://purl.org/dc/elements/1.1/title",
    "Xmp.dc.creator": "http://purl.org/dc/elements/1.1/creator",
    HIERARCHICAL: "http://ns.adobe.com/lightroom/1.0/hierarchicalSubject",
    TAGS_LIST: "http://www.digikam.org/ns/1.0/TagsList",
    LAST_KEYWORDS: "http://ns.microsoft.com/photo/1.0/LastKeywordXMP",
    METADATA_DATE: "http://ns.adobe.com/xap/1.0/MetadataDate",
    "Xmp.xmp.Rating": "http://ns.adobe.com/xap/1.0/Rating",
    "Xmp.photoshop.Headline": "http://ns.adobe.com/photoshop/1.0/Headline",
    "Xmp.photoshop.City": "http://ns.adobe.com/photoshop/1.0/City",
    "Xmp.photoshop.State": "http://ns.adobe.com/photoshop/1.0/State",
    "Xmp.photoshop.Country": "http://ns.adobe.com/photoshop/1.0/Country",
    "Xmp.iptc.Location": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/Location",
}
ESCAPES = {"/": "\u2215", "|": "\u00a6"}
TRIES = 4

_LOCK = threading.Lock()
_ready = False
_before_replace: Callable[[Path], None] | None = None  # tests: play a concurrent writer here


def _setup() -> None:
    global _ready
    if not _ready:
        pyexiv2.set_log_level(3)  # level 4 would hide corrupt XML and we would overwrite it
        pyexiv2.registerNs(PIXDEX_NS, "pixdex")
        _ready = True


# Naming --------------------------------------------------------------------------------------
def sidecar_path(image: Path, naming: str = "image.ext.xmp") -> Path:
    """The sidecar of `image`: ``IMG.jpg.xmp`` (darktable, digiKam, Immich) or ``IMG.xmp`` (Adobe, Capture
    One). Both are read; the one that exists is used and the second is never created. ``IMG.xmp``
    belongs to an image only while no other image or RAW file shares its stem (``IMG_1.CR2`` + ``IMG_1.JPG``):
    a RAW+JPEG pair never shares one, each gets its ``IMG.ext.xmp``. Other files (``IMG.txt``, a Live
    Photo's ``IMG.MOV``) do not count."""
    from pixdex.indexer.scan import folder_names, sidecar_name_of, stem_is_shared, stems_of

    long = image.with_name(image.name + ".xmp")
    stem, ext = os.path.splitext(image.name)
    short = image.with_name(stem + ".xmp")
    if not ext or not stem or os.path.lexists(long) or not (naming == "image.xmp" or os.path.lexists(short)):
        return long  # the common cases, without listing the folder
    names = folder_names(os.fsencode(image.parent))
    stems = stems_of(names)
    found = sidecar_name_of(os.fsencode(image.name), names, stems)
    if found is not None:
        return image.with_name(os.fsdecode(found))
    return short if naming == "image.xmp" and not stem_is_shared(os.fsencode(image.name), names, stems) else long


# Keywords ------------------------------------------------------------------------------------
def escape_level(level: str) -> str:
    for char, replacement in ESCAPES.items():
        level = level.replace(char, replacement)
    return level


def unescape_level(level: str) -> str:
    for char, replacement in ESCAPES.items():
        level = level.replace(replacement, char)
    return level


def _path_of(entry: str, separator: str) -> tuple[str, ...]:
    return tuple(unescape_level(level.strip()) for level in entry.split(separator) if level.strip())


def person_paths(xmp: dict[str, Any], parent: str) -> list[tuple[str, ...]]:
    """Every keyword a person has, in any of the fields programs read, as paths (flat ones have one level),
    minus those a person removed since pixdex wrote them everywhere (`removed_person`)."""
    removed = removed_person(xmp)
    return [p for p in _all_person_paths(xmp, parent) if p not in removed]


def removed_person(xmp: dict[str, Any]) -> set[tuple[str, ...]]:
    """A person's keyword that pixdex had written to all three fields (`pixdex:Person`) and that is now missing
    from one of them was removed by a person, in a program that edits only some fields (darktable: dc:subject
    and lr:hierarchicalSubject): it goes from all of them, instead of coming back from the third."""
    subject = set(as_list(xmp.get(SUBJECT)))
    hierarchical = {_path_of(h, "|") for h in as_list(xmp.get(HIERARCHICAL))}
    tags_list = {_path_of(t, "/") for t in as_list(xmp.get(TAGS_LIST))}
    recorded = [_path_of(p, "|") for p in as_list(xmp.get(PERSON))]
    return {p for p in recorded if p and not (p[-1] in subject and p in hierarchical and p in tags_list)}


def _all_person_paths(xmp: dict[str, Any], parent: str) -> list[tuple[str, ...]]:
    ours = set(as_list(xmp.get(OURS)))
    paths: list[tuple[str, ...]] = []
    for key, separator in ((HIERARCHICAL, "|"), (TAGS_LIST, "/"), (LAST_KEYWORDS, "/")):
        for entry in as_list(xmp.get(key)):
            path = _path_of(entry, separator)
            if path and path[0] != parent and path not in paths:
                paths.append(path)
    leaves = {p[-1] for p in paths}
    for keyword in as_list(xmp.get(SUBJECT)):
        if keyword not in ours and keyword not in leaves and keyword.strip():
            paths.append((keyword,))
            leaves.add(keyword)
    return paths


def rejected_now(xmp: dict[str, Any], parent: str) -> list[str]:
    """pixdex's rejected record, plus the machine keywords a person has removed since pixdex last wrote."""
    rejected = as_list(xmp.get(REJECTED))
    subject, ours = set(as_list(xmp.get(SUBJECT))), set(as_list(xmp.get(OURS)))
    hierarchical = {_path_of(h, "|") for h in as_list(xmp.get(HIERARCHICAL))}
    tags_list = {_path_of(t, "/") for t in as_list(xmp.get(TAGS_LIST))}
    theirs = {p[-1].casefold() for p in person_paths(xmp, parent)}
    for tag in as_list(xmp.get(MACHINE)):
        if tag in rejected or tag.casefold() in theirs:
            continue
        path = (parent, tag)
        if path not in hierarchical or path not in tags_list or (tag in ours and tag not in subject):
            rejected.append(tag)
    return rejected


@dataclass(frozen=True)
class KeywordPlan:
    subject: list[str]
    hierarchical: list[str]
    tags_list: list[str]
    ours: list[str]
    machine: list[str]
    rejected: list[str]
    person: list[str]

    def values(self) -> dict[str, list[str]]:
        return {SUBJECT: self.subject, HIERARCHICAL: self.hierarchical, TAGS_LIST: self.tags_list,
                OURS: self.ours, MACHINE: self.machine, REJECTED: self.rejected, PERSON: self.person}


def plan_keywords(xmp: dict[str, Any], machine_tags: Iterable[str], parent: str,
                  extra_person: Iterable[str] = (), remove: Iterable[str] = (),
                  also_rejected: Iterable[str] = ()) -> KeywordPlan:
    """The keyword fields after this merge: the person's keywords in all three fields, the machine's under
    `parent` minus what a person rejected or has as their own. `extra_person`/`remove`: a person's edit
    made through pixdex (removing a machine keyword rejects it)."""
    gone = set(remove)
    rejected = list(dict.fromkeys([*rejected_now(xmp, parent), *also_rejected]))
    old_machine = set(as_list(xmp.get(MACHINE))) | {p[1] for p in map(lambda h: _path_of(h, "|"),
                                                                       as_list(xmp.get(HIERARCHICAL)))
                                                    if len(p) == 2 and p[0] == parent}
    rejected += [t for t in gone if t in old_machine and t not in rejected]
    dropped = removed_person(xmp)
    person = [p for p in person_paths(xmp, parent) if p[-1] not in gone and "|".join(p) not in gone]
    person += [(k,) for k in extra_person if k.strip() and not any(p[-1] == k for p in person)]
    leaves = [p[-1] for p in person]
    folded = {leaf.casefold() for leaf in leaves}
    proposed = [t for t in dict.fromkeys(machine_tags) if t.strip() and t not in rejected and t not in gone]
    machine = [t for t in proposed if t.casefold() not in folded]  # a person's own keyword is never doubled
    ours_before = set(as_list(xmp.get(OURS)))
    dropped_leaves = {p[-1] for p in dropped} - set(leaves)
    subject = [s for s in as_list(xmp.get(SUBJECT)) if s not in gone and s not in dropped_leaves
               and (s not in ours_before or s in leaves)]
    subject += [leaf for leaf in leaves if leaf not in subject]
    ours = [t for t in machine if t not in subject]
    subject += ours

    def hierarchy(key: str, separator: str) -> list[str]:
        kept = [e for e in as_list(xmp.get(key)) if _path_of(e, separator)[:1] != (parent,)
                and _path_of(e, separator) in person]
        present = {_path_of(e, separator) for e in kept}
        kept += [separator.join(escape_level(level) for level in p) for p in person if p not in present]
        return kept + [f"{parent}{separator}{escape_level(t)}" for t in machine]

    # The record holds the machine keywords the person has too: if they remove one later, it is rejected.
    return KeywordPlan(subject, hierarchy(HIERARCHICAL, "|"), hierarchy(TAGS_LIST, "/"), ours, proposed, rejected,
                       ["|".join(escape_level(level) for level in p) for p in person])


# Reading -------------------------------------------------------------------------------------
def read_props(data: bytes) -> dict[str, Any]:
    """A packet's properties in pyexiv2's form; a packet exiv2 refuses is read from its RDF graph instead
    (its keywords, title and description still count). Raises SidecarError(None) when neither can."""
    with _LOCK:
        _setup()
        try:
            return dict(pyexiv2.ImageData(data).read_xmp())
        except RuntimeError as exc:
            exiv2_error = str(exc).strip()
    from pixdex.indexer.xmpgraph import NotRdf, props_of_graph

    try:
        return props_of_graph(data, URIS | {k: PIXDEX_NS + k.split(".")[-1] for k in (OURS, MACHINE, REJECTED,
                                                                                          PERSON, DESCRIBED, MODEL)})
    except NotRdf as exc:
        raise SidecarError(Path("?"), f"not valid XMP ({exiv2_error}; {exc})") from None


def state_of(path: Path, xmp: dict[str, Any], parent: str, error: str | None = None,
             data: bytes | None = None) -> SidecarState:
    person = person_paths(xmp, parent)
    leaves = [p[-1] for p in person]
    facts = reconcile(xmp, {}, {})
    text = Embedded(leaves, facts.title, facts.description, facts.creator, facts.rating, facts.headline,
                    facts.city, facts.sublocation, facts.state, facts.country).text()
    return SidecarState(os.fsencode(path), sidecar_version(path), True,
                        [{"name": p[-1], **({"path": "|".join(p)} if len(p) > 1 else {})} for p in person],
                        rejected_now(xmp, parent), text, error, facts.rating, facts.description,
                        digest=_digest(path, data))


def _digest(path: Path, data: bytes | None) -> str | None:
    from pixdex.indexer.scan import content_hash

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


def embedded_metadata(data: bytes) -> Embedded:
    """A person's metadata inside an image's own bytes (XMP, IPTC and EXIF, reconciled)."""
    return _embedded(data)[0]


def _embedded(data: bytes) -> tuple[Embedded, str]:
    """`embedded_metadata` and the image's raw XMP packet ("" when none), from one parse."""
    with _LOCK:
        _setup()
        try:
            image = pyexiv2.ImageData(data)
            try:
                xmp, iptc, exif = image.read_xmp(), image.read_iptc(), image.read_exif()
                try:
                    raw = image.read_raw_xmp() or ""
                except (RuntimeError, UnicodeError):  # a packet that cannot seed a sidecar still has its facts
                    raw = ""
            finally:
                image.close()
        except (RuntimeError, UnicodeDecodeError):
            return Embedded(), ""  # unreadable metadata costs the keywords, not the image
    return reconcile(xmp, iptc, exif, iptc_in_sync(data)), raw


SEEDED = {  # a new sidecar's fields taken from the image's reconciled metadata
    "title": "Xmp.dc.title", "description": DESCRIPTION, "creator": "Xmp.dc.creator", "rating": "Xmp.xmp.Rating",
    "headline": "Xmp.photoshop.Headline", "city": "Xmp.photoshop.City", "state": "Xmp.photoshop.State",
    "country": "Xmp.photoshop.Country", "sublocation": "Xmp.iptc.Location",
}


def _seed(image: Path) -> tuple[bytes, dict[str, Any]]:
    """A new sidecar's first packet — the image's embedded XMP when exiv2 reads it — and the values the MWG
    reconciliation sets on top (IPTC keywords an XMP-blind program changed, EXIF's description, …)."""
    try:
        data = image.read_bytes()
    except OSError:
        return SEED_PACKET, {}
    facts, raw = _embedded(data)
    packet = SEED_PACKET
    if raw.strip():
        with _LOCK:
            _setup()
            try:
                pyexiv2.ImageData(raw.encode()).read_xmp()  # exiv2 must be able to rewrite it
                packet = raw.encode()
            except (RuntimeError, UnicodeError):
                packet = SEED_PACKET
    values: dict[str, Any] = {}
    if facts.keywords:
        values[SUBJECT] = facts.keywords
    for name, key in SEEDED.items():
        value = getattr(facts, name)
        if value in ("", [], None):
            continue
        if key in ("Xmp.dc.title", DESCRIPTION):
            values[key] = {'lang="x-default"': value}
        elif key == "Xmp.dc.creator":
            values[key] = value
        else:
            values[key] = str(value)
    return packet, values


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
               embedding: tuple[str, str, Any] | None = None, text: str | None = None) -> SidecarState:
    """Merge pixdex's machine keywords (and its description and the text read in the image, if any) into
    the image's sidecar. Returns
    what the sidecar says now. Raises SidecarError when it cannot be read or faithfully rewritten.
    `embedding`: (CLIP model id, the image content's hash, vector), stored so the photo carries it."""
    also_rejected = list(rejected)

    def plan(xmp: dict[str, Any]) -> tuple[KeywordPlan, dict[str, Any]]:
        keywords = plan_keywords(xmp, tags, parent, also_rejected=also_rejected)
        values: dict[str, Any] = {MODEL: model_id}
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


def _rewrite(image: Path, parent: str, naming: str, plan: Planner, create: bool) -> SidecarState:
    if not os.path.lexists(image):  # deleted (or moved) meanwhile: its sidecar is the scanner's business now
        return SidecarState()
    path = sidecar_path(image, naming)
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
        payload, state_xmp = _merged(path, image, data, plan)
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
        return state_of(path, state_xmp, parent, data=payload)
    raise SidecarError(path, f"changed again each of {TRIES} times pixdex merged into it; left untouched "
                             "(tried again at its next change)")


def _merged(path: Path, image: Path, data: bytes | None, plan: Planner) -> tuple[bytes | None, dict[str, Any]]:
    """The new packet (None: nothing to change) and the properties it holds."""
    seed_values: dict[str, Any] = {}
    if data is None:
        data, seed_values = _seed(image)
    if b"rdf:nodeID" in data:
        raise SidecarError(path, "sidecar uses rdf:nodeID, which XMP does not allow and exiv2 would drop; "
                                 "left untouched")
    with _LOCK:
        _setup()
        try:
            doc = pyexiv2.ImageData(data)
            xmp = dict(doc.read_xmp())
            base = {**xmp, **seed_values}
            keywords, values = plan(base)
            values = {**{k: v for k, v in seed_values.items() if k != SUBJECT}, **keywords.values(), **values}
            if all(_same(xmp.get(k), v) for k, v in values.items()) and not seed_values:
                return None, xmp
            values[METADATA_DATE] = datetime.now().astimezone().isoformat(timespec="seconds")
            # exiv2 mirrors a sidecar's XMP into EXIF and IPTC on read and back on write, which
            # resurrects deleted dc:subject entries and mangles exif:ExifVersion. Clearing EXIF first,
            # then IPTC, stops both (the other order lets the IPTC write copy EXIF back).
            doc.clear_exif()
            doc.clear_iptc()
            doc.modify_xmp({k: None for k in values if k in xmp})
            doc.modify_xmp(_pyexiv2_values(values))
            payload = doc.get_bytes()
            after = dict(pyexiv2.ImageData(payload).read_xmp())
        except RuntimeError as exc:
            raise SidecarError(path, f"sidecar is not valid XMP ({str(exc).strip()}); left untouched") from exc
    check_graph(path, data, payload, list(values))
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

    owned = [URIS[k] if k in URIS else PIXDEX_NS + k.split(".")[-1] if k.startswith("Xmp.pixdex.") else k
             for k in changed_keys]
    try:
        changes = changed_triples(before, after, owned)
    except NotRdf as exc:
        raise SidecarError(path, f"cannot check the rewrite of {what} as RDF ({exc}); left untouched") from None
    if changes:
        raise SidecarError(path, f"exiv2 cannot rewrite {what} without changing what pixdex does not own ("
                                 + "; ".join(changes[:2]) + f"); {outcome}")


# Moves and deletions --------------------------------------------------------------------------
OWN_KEYS = {SUBJECT, HIERARCHICAL, TAGS_LIST, OURS, MACHINE, REJECTED, PERSON, MODEL, DESCRIBED, METADATA_DATE, EMBEDDING,
            EMBEDDING_MODEL, EMBEDDING_OF}


def only_ours(path: Path, parent: str) -> bool:
    """Whether this sidecar holds nothing but pixdex's own keywords and bookkeeping (a machine keyword a
    person removed is their decision too: such a sidecar is theirs)."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        xmp = read_sidecar(path)
    except SidecarError:
        return False
    return all(k.split("[")[0] in OWN_KEYS for k in xmp) and not person_paths(xmp, parent) \
        and not rejected_now(xmp, parent)


def remove_if_only_ours(image: Path, parent: str, naming: str = "image.ext.xmp") -> bool:
    """After the image was deleted: remove its sidecar only when pixdex alone wrote it — nothing in it but
    pixdex's own keywords and bookkeeping. Anything a person (or another program) put there, a removal of
    one of pixdex's keywords included, keeps it."""
    path = sidecar_path(image, naming)
    if image.exists() or not path.is_file() or path.is_symlink():
        return False
    try:
        xmp = read_sidecar(path)
    except SidecarError:
        return False
    # A machine keyword a person removed is their decision too: kept for the image's return (trash, restore).
    only_ours = (all(k.split("[")[0] in OWN_KEYS for k in xmp) and not person_paths(xmp, parent)
                 and not rejected_now(xmp, parent))
    if only_ours:
        path.unlink(missing_ok=True)
    return only_ours


def carry_over(old_image: Path, new_image: Path, naming: str = "image.ext.xmp") -> Path | None:
    """After a move, the image's sidecar goes with it. One already at the destination is never
    replaced (pixdex's tags are merged into it instead) and the old one then stays where it is.
    A sidecar left behind would otherwise describe whatever image appears at the old name next."""
    import errno

    from pixdex.indexer.files import atomic_write

    old = sidecar_path(old_image, naming)
    if not old.is_file():
        return None
    from pixdex.indexer.scan import folder_names, stem_is_shared, stems_of

    new = new_image.with_name(new_image.name + ".xmp")
    stem = os.path.splitext(new_image.name)[0]
    names = folder_names(os.fsencode(new_image.parent))
    if old.name != old_image.name + ".xmp" and stem and not stem_is_shared(os.fsencode(new_image.name), names,
                                                                         stems_of(names)):
        new = new_image.with_name(stem + ".xmp")  # an IMG.xmp stays an IMG.xmp
    if old.is_symlink():  # the link goes along and still points at its target (a relative link is redone)
        target = os.path.realpath(old)
        if os.path.lexists(new):
            return None
        try:
            os.symlink(target if os.path.isabs(os.readlink(old)) else os.path.relpath(target, new.parent), new)
            old.unlink()
        except OSError as exc:
            raise SidecarError(new, f"cannot move the sidecar link here: {exc.strerror or exc}") from exc
        return new
    try:
        os.link(old, new)  # fails if `new` exists: no clobbering, unlike rename
    except FileExistsError:
        if not os.path.samefile(old, new):
            return None  # a sidecar of the destination's own; the old one stays
        # the same file: a move cut short between link and unlink; finish it
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise SidecarError(new, f"cannot move sidecar here: {exc.strerror or exc}") from exc
        try:  # another filesystem: copy (atomically, only if still absent), then remove the old one
            if new.exists():
                return None
            atomic_write(new, old.read_bytes())
        except OSError as copy_exc:
            raise SidecarError(new, f"cannot move sidecar here: {copy_exc.strerror or copy_exc}") from copy_exc
    try:
        old.unlink()
    except OSError as exc:
        raise SidecarError(old, f"sidecar copied to {new.name} but the old one cannot be removed: "
                                f"{exc.strerror or exc}") from exc
    return new
