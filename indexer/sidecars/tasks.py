"""The sidecar jobs the decode pool runs, one top-level function each: merge pixdex's results into an image's
sidecar (`sync_sidecar`), carry a sidecar along a move (`carry_sidecar`), a person's edit (`edit_sidecar`), a
description's results (`describe_sidecar`), remove the sidecar of a deleted image (`drop_sidecar`).

The indexing process imports this module to name the jobs it schedules (`keeper`); the modules they run —
pyexiv2, rdflib and lxml behind them — are imported inside each job, in the worker, so that process never
loads them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixdex.indexer import faults
from pixdex.indexer.captured import Captured
from pixdex.indexer.catalog.rows import ImageRow
from pixdex.indexer.digest import content_hash
from pixdex.indexer.errors import SidecarError
from pixdex.indexer.files import read_regular
from pixdex.indexer.sidecars.state import SidecarState

Embedding = tuple[str, str, Any]  # (CLIP model id, the content hash it was made from, the vector)


@dataclass(frozen=True)
class SidecarSpec:
    write: bool  # sidecar.write, and there are machine keywords to write (never in reduced mode)
    parent: str
    naming: str
    model_id: str
    embedded: bool = False  # also into a JPEG's/TIFF's own XMP


@dataclass(frozen=True)
class Move:
    """An indexed image that moved, as the scanner carries its sidecar along."""

    old: bytes
    new: bytes
    tags: list[str]  # its machine keywords and the rejected ones, as the catalog holds them now
    rejected: list[str]
    merge: bool = True  # False: it is queued, and its own turn merges them
    embedding: Embedding | None = None  # of the catalog's row
    image_id: int | None = None


@dataclass(frozen=True)
class Whereabouts:
    """Where the image itself says it was taken: its GPS position and its own location fields (`Place` values)."""

    lat: float | None = None
    lon: float | None = None
    own: dict[str, str] = dataclasses.field(default_factory=dict)


def sync_sidecar(path: bytes, tags: list[str], rejected: list[str], spec: SidecarSpec,
                 embedding: Embedding | None = None, image_id: int | None = None,
                 where: Whereabouts | None = None) -> SidecarState:
    """Merge pixdex's keywords (and the embedding and the image's id, when given) into the image's sidecar
    (when `spec.write`) and say what it holds now. With `where`, the place of the image's position (else the
    sidecar's) fills the location fields the person has none of, and the state says which place it is. Never
    raises for the file: one that cannot be written is still read."""
    from pixdex.indexer.places import Place  # late: in the worker only
    from pixdex.indexer.sidecars.merge import write_tags  # late: in the worker only
    from pixdex.indexer.sidecars.read import read_state  # late: in the worker only

    image = Path(os.fsdecode(path))
    faults.hold("sidecar", [path])
    position = (where.lat, where.lon) if where is not None and where.lat is not None and where.lon is not None \
        else None
    own = Place.of(where.own) if where is not None else None
    with Captured():
        if not spec.write:
            return _placed(read_state(image, spec.parent, spec.naming), where)

        def write() -> SidecarState:
            state = write_tags(image, tags, spec.parent, spec.model_id, spec.naming, rejected=rejected,
                               embedding=embedding, image_id=image_id, position=position, own_place=own)
            return _into_image(image, state, tags, rejected, spec, embedding) if spec.embedded else state

        return _placed(_written_or_read(image, spec, write), where)


def _placed(state: SidecarState, where: Whereabouts | None) -> SidecarState:
    """The state with the GeoNames place of the image's position, else of the sidecar's (when `where` is given)."""
    from pixdex.indexer.places import place_at  # late: in the worker only

    if where is None:
        return state
    lat, lon = (where.lat, where.lon) if where.lat is not None and where.lon is not None else (state.lat, state.lon)
    return dataclasses.replace(state, place=place_at(lat, lon).as_dict())


def _written_or_read(image: Path, spec: SidecarSpec, write: Callable[[], SidecarState]) -> SidecarState:
    """What `write` made of the image's sidecar; when it cannot be written, what it holds, with why not."""
    from pixdex.indexer.sidecars.read import read_state  # late: in the worker only

    try:
        return write()
    except SidecarError as exc:
        return read_state(image, spec.parent, spec.naming, error=exc.reason)
    except OSError as exc:  # a name too long for a sidecar beside it, a read-only folder, …
        return read_state(image, spec.parent, spec.naming, error=f"cannot write sidecar: {exc.strerror or exc}")


def _into_image(image: Path, state: SidecarState, tags: list[str], rejected: list[str], spec: SidecarSpec,
                embedding: Embedding | None) -> SidecarState:
    """[sidecar] embedded: the sidecar's keyword fields into the image's own XMP. The image's content hash
    changes, so the embedding stored in the sidecar is stamped with the new one."""
    from pixdex.indexer.sidecars.embedded import applies, keyword_values, write_keywords  # late: in the worker only
    from pixdex.indexer.sidecars.merge import write_tags  # late: in the worker only
    from pixdex.indexer.sidecars.read import read_sidecar  # late: in the worker only

    if state.path is None or not applies(image):
        return state
    try:
        if not write_keywords(image, keyword_values(read_sidecar(Path(os.fsdecode(state.path))))):
            return state
    except SidecarError as exc:
        return dataclasses.replace(state, error=exc.reason)
    data, st = read_regular(os.fsencode(image))
    digest = content_hash(data)
    if embedding is not None:
        state = write_tags(image, tags, spec.parent, spec.model_id, spec.naming, rejected=rejected,
                           embedding=(embedding[0], digest, embedding[2]))
    return dataclasses.replace(state, image_stat=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                               image_digest=digest)


def carry_sidecar(move: Move, spec: SidecarSpec) -> SidecarState:
    """After a move: the new image's sidecar is the old one, moved, with pixdex's keywords, the row's embedding
    and id merged (unless `move.merge` is False)."""
    from pixdex.indexer.sidecars.moves import carry_over  # late: in the worker only
    from pixdex.indexer.sidecars.read import read_state  # late: in the worker only

    new = Path(os.fsdecode(move.new))
    try:
        carry_over(Path(os.fsdecode(move.old)), new, spec.naming, spec.parent)
    except SidecarError as exc:
        return read_state(new, spec.parent, spec.naming, error=exc.reason)
    except OSError as exc:
        return read_state(new, spec.parent, spec.naming, error=f"cannot move sidecar: {exc.strerror or exc}")
    if not move.merge:
        return read_state(new, spec.parent, spec.naming)
    return sync_sidecar(move.new, move.tags, move.rejected, spec, move.embedding, move.image_id)


def identity(row: ImageRow) -> tuple[int, str] | None:
    """What a person's edit records of the image (`edit_sidecar`): its id and the content hash it was given for."""
    return (row.id, row.hash) if row.hash else None


def edit_sidecar(path: bytes, add: list[str], remove: list[str], description: str | None,
                 spec: SidecarSpec, rating: int | None = None, label: str | None = None,
                 identity: tuple[int, str] | None = None) -> SidecarState:
    """A person's edit (PATCH /items), in a worker: pyexiv2 never runs in the serving process. Raises
    SidecarError when the sidecar cannot be written (the edit is then not made). `identity`: the image's (id,
    content hash), recorded with the edit."""
    from pixdex.indexer.sidecars.merge import edit_person  # late: in the worker only

    image = Path(os.fsdecode(path))
    try:
        with Captured():
            return edit_person(image, add, remove, description, spec.parent, spec.naming, rating, label, identity)
    except OSError as exc:
        raise SidecarError(image, f"cannot write sidecar: {exc.strerror or exc}") from None


def describe_sidecar(path: bytes, machine: list[str], rejected: list[str], spec: SidecarSpec, description: str,
                     text: str) -> SidecarState:
    """A description's results into the sidecar: the keywords as machine keywords (with the others), the
    description into dc:description where it is empty or pixdex's, the visible text into pixdex:Text."""
    from pixdex.indexer.sidecars.merge import write_tags  # late: in the worker only
    from pixdex.indexer.sidecars.read import read_state  # late: in the worker only

    image = Path(os.fsdecode(path))
    with Captured():
        if not spec.write:
            return read_state(image, spec.parent, spec.naming)
        return _written_or_read(image, spec, lambda: write_tags(
            image, machine, spec.parent, spec.model_id, spec.naming, description=description, rejected=rejected,
            text=text))


def ocr_sidecar(path: bytes, text: str, spec: SidecarSpec, read_by: tuple[str, str] | None = None) -> SidecarState:
    """The OCR model's reading into the sidecar (`pixdex:TextOCR`, and `pixdex:Text` with the vision LLM's), with
    `read_by` (the reader and the content hash it read: `pixdex:TextOCRBy`, `pixdex:TextOCROf`): an image without
    text gets no new sidecar for it, and an existing one loses the text of the image's old content."""
    from pixdex.indexer.sidecars.merge import write_tags  # late: in the worker only
    from pixdex.indexer.sidecars.read import read_state  # late: in the worker only

    image = Path(os.fsdecode(path))
    with Captured():
        if not spec.write:
            return read_state(image, spec.parent, spec.naming)
        return _written_or_read(image, spec, lambda: write_tags(
            image, None, spec.parent, spec.model_id, spec.naming, ocr_text=text, ocr_by=read_by))


def drop_sidecar(path: bytes, spec: SidecarSpec) -> bool:
    """The image is gone: remove its sidecar if pixdex alone wrote it (see `moves.remove_if_only_ours`)."""
    from pixdex.indexer.sidecars.moves import remove_if_only_ours  # late: in the worker only

    try:
        with Captured():
            return remove_if_only_ours(Path(os.fsdecode(path)), spec.parent, spec.naming)
    except OSError:
        return False
