"""Merging into a sidecar: pixdex's keywords, description, text, embedding and id (`write_tags`), a person's edit
made through pixdex (`edit_person`), pixdex's record taken out of a sidecar a RAW took over (`release`).

Each merge reads the sidecar (or seeds a new one: `seed`), plans the keyword fields (`keywords.plan_keywords`)
and the other values, writes them (`writers.written`: exiv2, else the RDF/XML editor, checked on the graph)
and replaces the file through `files.replace_owned`: atomic, keeping mode/owner/xattrs, through symlinks,
never over a concurrent edit (the merge is then redone on the new content, `TRIES` times at most).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.files import ChangedMeanwhile, Refused, owned_target, replace_owned, seen
from pixdex.indexer.metadata.gps import xmp_gps
from pixdex.indexer.metadata.reconcile import as_list, lang_alt
from pixdex.indexer.places import Place, place_at
from pixdex.indexer.sidecars.embedding import encode_embedding
from pixdex.indexer.sidecars.keys import (
    DESCRIBED,
    DESCRIPTION,
    EMBEDDING,
    EMBEDDING_MODEL,
    EMBEDDING_OF,
    IMAGE_ID,
    IMAGE_OF,
    LABEL,
    MACHINE,
    METADATA_DATE,
    MODEL,
    RATING,
    RECORD,
    TEXT,
    TEXT_LLM,
    TEXT_OCR,
    TEXT_OCR_BY,
    TEXT_OCR_OF,
)
from pixdex.indexer.sidecars.keywords import KeywordPlan, plan_keywords
from pixdex.indexer.sidecars.location import location_values
from pixdex.indexer.sidecars.naming import sidecar_path
from pixdex.indexer.sidecars.read import read_props, state_of
from pixdex.indexer.sidecars.seed import adopted, seed
from pixdex.indexer.sidecars.state import SidecarState
from pixdex.indexer.sidecars.writers import same, written

TRIES = 4
_before_replace: Callable[[Path], None] | None = None  # tests: play a concurrent writer here
Planner = Callable[[dict[str, Any]], tuple[KeywordPlan, dict[str, Any]]]  # → keywords, other values (None: delete)


def write_tags(image: Path, tags: list[str] | None, parent: str, model_id: str, naming: str = "image.ext.xmp",
               description: str | None = None, rejected: Iterable[str] = (),
               embedding: tuple[str, str, Any] | None = None, text: str | None = None,
               image_id: int | None = None, ocr_text: str | None = None,
               position: tuple[float, float] | None = None, own_place: Place | None = None,
               ocr_by: tuple[str, str] | None = None) -> SidecarState:
    """Merge pixdex's machine keywords (and its description and the text read in the image, if any) into
    the image's sidecar. Returns
    what the sidecar says now. Raises SidecarError when it cannot be read or faithfully rewritten.
    `embedding`: (CLIP model id, the image content's hash, vector), stored so the photo carries it;
    `image_id`: its catalog id (`pixdex:Id`), which a rebuild or another machine gives it again;
    `tags` None: the machine keywords the sidecar holds stay as they are;
    `text`, `ocr_text`: what the vision LLM and the OCR model read (None: that source's text is unchanged);
    `ocr_by`: the OCR reader and the content hash it read `ocr_text` from (a rebuild takes the text back);
    `own_place`: the image's own location fields — with it, the place of `position` (the image's GPS, else the
    sidecar's) fills the location fields the person has in neither (`location`)."""
    also_rejected = list(rejected)

    def plan(xmp: dict[str, Any]) -> tuple[KeywordPlan, dict[str, Any]]:
        machine = tags if tags is not None else as_list(xmp.get(MACHINE))
        keywords = plan_keywords(xmp, machine, parent, also_rejected=also_rejected)
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
        if text is not None or ocr_text is not None:
            values.update(text_values(xmp, text, ocr_text))
        if ocr_text is not None and ocr_by is not None:
            values[TEXT_OCR_BY], values[TEXT_OCR_OF] = ocr_by
        if own_place is not None:
            lat, lon = position or xmp_gps(xmp)
            values.update(location_values(xmp, place_at(lat, lon), own_place))
        return keywords, values

    return rewrite(image, parent, naming, plan, create=bool(tags) or bool(description) or embedding is not None
                   or bool(ocr_text) or bool(text))


def text_values(xmp: dict[str, Any], llm: str | None, ocr: str | None) -> dict[str, Any]:
    """pixdex:Text as the OCR model's lines, then the vision LLM's reading, each source kept in its own property
    (None: that source's is unchanged). A sidecar from before both were kept has the LLM's in pixdex:Text."""
    legacy = str(xmp.get(TEXT) or "") if TEXT_OCR not in xmp and TEXT_LLM not in xmp else ""
    llm = llm if llm is not None else str(xmp.get(TEXT_LLM) or legacy)
    ocr = ocr if ocr is not None else str(xmp.get(TEXT_OCR) or "")
    both = [t.strip() for t in (ocr, llm) if t.strip()]
    return {TEXT_OCR: ocr.strip() or None, TEXT_LLM: llm.strip() or None,
            TEXT: "\n".join(dict.fromkeys(both)) or None}


def edit_person(image: Path, add: list[str], remove: list[str], description: str | None, parent: str,
                naming: str = "image.ext.xmp", rating: int | None = None, label: str | None = None,
                identity: tuple[int, str] | None = None) -> SidecarState:
    """A person's edit through pixdex (PATCH /items): keywords added as their own (in all three fields),
    keywords removed from every field — a machine keyword removed is rejected for good — the
    description set (None: unchanged; "": emptied), the rating (xmp:Rating 0–5; None: unchanged) and the colour
    label (xmp:Label; None: unchanged, "": removed). Everything else in the sidecar is kept. `identity`: the
    image's catalog id and content hash, written with the edit (`pixdex:Id`, `pixdex:IdOf`) so that a sidecar written
    without models still gives the image its id back (from the trash, after a rebuild)."""
    def plan(xmp: dict[str, Any]) -> tuple[KeywordPlan, dict[str, Any]]:
        machine = [t for t in as_list(xmp.get(MACHINE)) if t not in add]
        keywords = plan_keywords(xmp, machine, parent, extra_person=add, remove=remove)
        values: dict[str, Any] = {}
        if identity is not None:
            values[IMAGE_ID], values[IMAGE_OF] = str(identity[0]), identity[1]
        if description is not None:
            values[DESCRIPTION] = {'lang="x-default"': description} if description else None
            values[DESCRIBED] = None  # the person's now
        if rating is not None:
            values[RATING] = str(rating)
        if label is not None:
            values[LABEL] = label or None
        return keywords, values

    return rewrite(image, parent, naming, plan, create=True)


def release(image: Path, path: Path, parent: str) -> None:
    """Take pixdex's machine keywords and its record for `image` out of `path` (the ``IMG.xmp`` a RAW took);
    the person's keywords and everything else stay. Raises SidecarError when it cannot be written."""
    def plan(xmp: dict[str, Any]) -> tuple[KeywordPlan, dict[str, Any]]:
        return plan_keywords(xmp, [], parent), dict.fromkeys(RECORD)

    rewrite(image, parent, "", plan, create=False, path=path)


def rewrite(image: Path, parent: str, naming: str, plan: Planner, create: bool,
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
        payload, state_xmp, shared = _merged(path, image, data, plan, parent)
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
        return state_of(path, state_xmp, parent, error=_release(image, shared, parent), data=payload)
    raise SidecarError(path, f"changed again each of {TRIES} times pixdex merged into it; left untouched "
                             "(tried again at its next change)")


def _release(image: Path, shared: Path | None, parent: str) -> str | None:
    """The image's keywords were carried out of the ``IMG.xmp`` it shared (`seed.adopted`): take pixdex's own
    out of it. Returns why that could not be done (None: done, or nothing to do)."""
    if shared is None:
        return None
    try:
        release(image, shared, parent)
    except SidecarError as exc:
        return f"pixdex's keywords stay in {shared.name}: {exc.reason}"
    return None


def _merged(path: Path, image: Path, data: bytes | None, plan: Planner,
            parent: str) -> tuple[bytes | None, dict[str, Any], Path | None]:
    """The new packet (None: nothing to change), the properties it holds, and the ``IMG.xmp`` a new
    sidecar took the person's keywords from (None: none)."""
    seed_values: dict[str, Any] = {}
    carried: Path | None = None
    digest: str | None = None
    new = data is None
    if data is None:
        data, seed_values, digest = seed(image)
    try:
        xmp = read_props(data)
    except SidecarError as exc:
        raise SidecarError(path, f"sidecar is {exc.reason}; left untouched") from None
    if new:
        carried, seed_values = adopted(image, digest, parent, xmp, seed_values)
    keywords, values = plan({**xmp, **seed_values})
    values = {**{k: v for k, v in seed_values.items() if k not in keywords.values()}, **keywords.values(), **values}
    if all(same(xmp.get(k), v) for k, v in values.items()) and not seed_values:
        return None, xmp, None
    values[METADATA_DATE] = datetime.now().astimezone().isoformat(timespec="seconds")
    payload, after = written(path, data, values)
    return payload, after, carried
