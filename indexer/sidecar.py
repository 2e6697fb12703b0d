"""XMP sidecars beside images (``IMG.ext.xmp``): merge pixdex's tags in, never lose a person's.

Tags go where digiKam, darktable, Lightroom, Immich and exiftool look: flat in ``dc:subject``,
under ``<tag_parent>|`` in ``lr:hierarchicalSubject`` and under ``<tag_parent>/`` in
``digiKam:TagsList``. ``pixdex:Tags`` records which ``dc:subject`` entries pixdex itself added,
so a later run replaces only those; every other property of the sidecar is kept as it was.

pyexiv2 edits in memory (`ImageData`), and the result replaces the file atomically
(temp file + fsync + rename). pyexiv2 shares global state and holds the GIL, so every call goes
through `_LOCK` and callers keep it off the event loop.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyexiv2

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.files import atomic_write

PIXDEX_NS = "https://pixdex.dev/ns/1.0/"
SEED_PACKET = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
               '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
               'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
               '<?xpacket end="w"?>').encode()
SUBJECT, HIERARCHICAL, TAGS_LIST = "Xmp.dc.subject", "Xmp.lr.hierarchicalSubject", "Xmp.digiKam.TagsList"
OURS, MODEL = "Xmp.pixdex.Tags", "Xmp.pixdex.Model"
OWN_KEYS = {SUBJECT, HIERARCHICAL, TAGS_LIST, OURS, MODEL, "Xmp.xmp.MetadataDate"}  # what a sidecar of pixdex's holds

_LOCK = threading.Lock()
_ready = False


def _setup() -> None:
    global _ready
    if not _ready:
        pyexiv2.set_log_level(3)  # level 4 would hide corrupt XML and we would overwrite it
        pyexiv2.registerNs(PIXDEX_NS, "pixdex")
        _ready = True


def sidecar_path(image: Path) -> Path:
    return image.with_name(image.name + ".xmp")


@dataclass(frozen=True)
class PersonMetadata:
    """What a person (or another program) wrote: indexed as text, never changed by pixdex."""

    keywords: list[str] = field(default_factory=list)
    title: str = ""
    description: str = ""

    def text(self) -> str:
        return " ".join([*self.keywords, self.title, self.description]).strip()


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [] if value.startswith("type=") else [value]
    if isinstance(value, dict):
        return [str(v) for v in value.values()]
    return [str(v) for v in value]


def _lang_alt(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get('lang="x-default"') or next(iter(value.values()), ""))
    return str(value or "")


def person_metadata(xmp: dict[str, Any], iptc: dict[str, Any] | None = None) -> PersonMetadata:
    ours = set(_as_list(xmp.get(OURS)))
    keywords = [k for k in _as_list(xmp.get(SUBJECT)) if k not in ours]
    keywords += [k for k in _as_list((iptc or {}).get("Iptc.Application2.Keywords")) if k not in keywords]
    title = _lang_alt(xmp.get("Xmp.dc.title")) or str((iptc or {}).get("Iptc.Application2.ObjectName") or "")
    description = _lang_alt(xmp.get("Xmp.dc.description")) or \
        str((iptc or {}).get("Iptc.Application2.Caption") or "")
    return PersonMetadata(keywords, title, description)


def read_sidecar(path: Path) -> dict[str, Any]:
    """The XMP properties of an existing sidecar ({} when there is none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SidecarError(path, f"cannot read sidecar: {exc.strerror}") from exc
    with _LOCK:
        _setup()
        try:
            return dict(pyexiv2.ImageData(data).read_xmp())
        except RuntimeError as exc:
            raise SidecarError(path, f"sidecar is not valid XMP ({exc}); left untouched") from exc


def read_embedded_bytes(data: bytes) -> PersonMetadata:
    """Keywords, title and description already inside an image (XMP and IPTC), from its bytes."""
    with _LOCK:
        _setup()
        try:
            image = pyexiv2.ImageData(data)
            try:
                return person_metadata(image.read_xmp(), image.read_iptc())
            finally:
                image.close()
        except (RuntimeError, UnicodeDecodeError):
            return PersonMetadata()  # unreadable metadata costs the keywords, not the image


def merge_tags(xmp: dict[str, Any], tags: Iterable[str], parent: str) -> dict[str, Any]:
    """The properties to write so the sidecar holds `tags` as pixdex's, all else unchanged."""
    tags = list(dict.fromkeys(tags))
    previously_added = set(_as_list(xmp.get(OURS)))
    subject = [s for s in _as_list(xmp.get(SUBJECT)) if s not in previously_added]
    added = [t for t in tags if t not in subject]
    hierarchical = [h for h in _as_list(xmp.get(HIERARCHICAL)) if not h.startswith(parent + "|")]
    tags_list = [t for t in _as_list(xmp.get(TAGS_LIST)) if not t.startswith(parent + "/")]
    return {
        SUBJECT: subject + added,
        HIERARCHICAL: hierarchical + [f"{parent}|{t}" for t in tags],
        TAGS_LIST: tags_list + [f"{parent}/{t}" for t in tags],
        OURS: added,
    }


def _bag(key: str, values: list[str]) -> dict[str, str]:
    if not values:
        return {}
    out = {key: 'type="Bag"'}
    out.update({f"{key}[{i}]": v for i, v in enumerate(values, 1)})
    return out


def write_tags(image: Path, tags: list[str], parent: str, model_id: str) -> Path | None:
    """Merge `tags` into the image's sidecar; returns its path, or None when nothing needed writing."""
    path = sidecar_path(image)
    exists = path.exists()
    if not tags and not exists:
        return None
    try:
        data = path.read_bytes() if exists else SEED_PACKET
    except OSError as exc:
        raise SidecarError(path, f"cannot read sidecar: {exc.strerror}") from exc
    if b"rdf:nodeID" in data:
        raise SidecarError(path, "sidecar uses rdf:nodeID, which XMP does not allow and exiv2 would drop; "
                                 "left untouched")
    with _LOCK:
        _setup()
        try:
            doc = pyexiv2.ImageData(data)
            xmp = dict(doc.read_xmp())
            merged = merge_tags(xmp, tags, parent)
            if all(_as_list(xmp.get(k)) == v for k, v in merged.items()) and xmp.get(MODEL) == model_id:
                return path
            # exiv2 mirrors a sidecar's XMP into EXIF and IPTC on read and back on write, which
            # resurrects deleted dc:subject entries and mangles exif:ExifVersion. Clearing EXIF first,
            # then IPTC, stops both (the other order lets the IPTC write copy EXIF back).
            doc.clear_exif()
            doc.clear_iptc()
            doc.modify_xmp({k: None for k in [*merged, MODEL] if k in xmp})
            values: dict[str, Any] = {MODEL: model_id} if tags or exists else {}
            for key, items in merged.items():
                values.update(_bag(key, items))
            doc.modify_xmp(values)
            payload = doc.get_bytes()
            _check_kept(path, xmp, dict(pyexiv2.ImageData(payload).read_xmp()), set(merged) | {MODEL})
        except RuntimeError as exc:
            raise SidecarError(path, f"sidecar is not valid XMP ({exc}); left untouched") from exc
    _replace(path, payload)
    return path


def edit_person(image: Path, add: list[str], remove: list[str], description: str | None, parent: str) -> Path:
    """A person's edit through pixdex (PATCH /items): keywords added as their own (flat in dc:subject, as
    their own path in the hierarchical fields), keywords removed from every field — pixdex's included —
    and the description set (None: unchanged; "": emptied). Everything else in the sidecar is kept."""
    path = sidecar_path(image)
    try:
        data = path.read_bytes() if path.exists() else SEED_PACKET
    except OSError as exc:
        raise SidecarError(path, f"cannot read sidecar: {exc.strerror}") from exc
    if b"rdf:nodeID" in data:
        raise SidecarError(path, "sidecar uses rdf:nodeID, which exiv2 would drop; left untouched")
    gone = set(remove)
    with _LOCK:
        _setup()
        try:
            doc = pyexiv2.ImageData(data)
            xmp = dict(doc.read_xmp())
            subject = [k for k in _as_list(xmp.get(SUBJECT)) if k not in gone]
            merged = {
                SUBJECT: subject + [k for k in add if k not in subject],
                HIERARCHICAL: _with_paths([h for h in _as_list(xmp.get(HIERARCHICAL))
                                           if h not in gone and h.removeprefix(parent + "|") not in gone], add),
                TAGS_LIST: _with_paths([t for t in _as_list(xmp.get(TAGS_LIST))
                                        if t not in gone and t.removeprefix(parent + "/") not in gone], add),
                OURS: [k for k in _as_list(xmp.get(OURS)) if k not in gone and k not in add],
            }
            owned = set(merged) | ({"Xmp.dc.description"} if description is not None else set())
            doc.clear_exif()
            doc.clear_iptc()
            doc.modify_xmp({k: None for k in owned if k in xmp})
            values: dict[str, Any] = {}
            for key, items in merged.items():
                values.update(_bag(key, items))
            if description:
                values["Xmp.dc.description"] = {'lang="x-default"': description}
            doc.modify_xmp(values)
            payload = doc.get_bytes()
            _check_kept(path, xmp, dict(pyexiv2.ImageData(payload).read_xmp()), owned)
        except RuntimeError as exc:
            raise SidecarError(path, f"sidecar is not valid XMP ({exc}); left untouched") from exc
    _replace(path, payload)
    return path


def _with_paths(kept: list[str], add: list[str]) -> list[str]:
    return kept + [k for k in add if k not in kept]


def remove_if_only_ours(image: Path, parent: str) -> bool:
    """After the image was deleted: remove its sidecar only when pixdex alone wrote it — nothing in it but
    pixdex's own tags and bookkeeping. Anything a person (or another program) put there keeps it."""
    path = sidecar_path(image)
    if image.exists() or not path.is_file():
        return False
    try:
        xmp = read_sidecar(path)
    except SidecarError:
        return False
    ours = set(_as_list(xmp.get(OURS)))
    only_ours = (
        all(k.split("[")[0] in OWN_KEYS for k in xmp)
        and set(_as_list(xmp.get(SUBJECT))) <= ours
        and all(h.startswith(parent + "|") for h in _as_list(xmp.get(HIERARCHICAL)))
        and all(t.startswith(parent + "/") for t in _as_list(xmp.get(TAGS_LIST)))
    )
    if only_ours:
        path.unlink(missing_ok=True)
    return only_ours


def carry_over(old_image: Path, new_image: Path) -> Path | None:
    """After a move, the image's sidecar goes with it. One already at the destination is never
    replaced (pixdex's tags are merged into it instead) and the old one then stays where it is.
    A sidecar left behind would otherwise describe whatever image appears at the old name next."""
    old, new = sidecar_path(old_image), sidecar_path(new_image)
    if not old.is_file():
        return None
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


def _check_kept(path: Path, before: dict[str, Any], after: dict[str, Any], ours: set[str]) -> None:
    """Refuse a rewrite in which exiv2 would change anything pixdex did not mean to change."""
    changed = sorted(k for k in before.keys() | after.keys()
                     if k.split("[")[0] not in ours and before.get(k) != after.get(k))
    if changed:
        raise SidecarError(path, "exiv2 cannot rewrite this sidecar without changing "
                                 f"{', '.join(changed[:5])}; left untouched")


def _replace(path: Path, payload: bytes) -> None:
    try:
        atomic_write(path, payload)
    except OSError as exc:
        raise SidecarError(path, f"cannot write sidecar: {exc.strerror or exc}") from exc
