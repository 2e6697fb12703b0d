"""What an image's sidecar carries for the models: its catalog id, the embedding and the machine keywords. A
decode worker takes them instead of decoding the image and running the models when they were made by the
configured models from this very content (`Carried.usable`) — or, without models (reduced mode), whatever
keywords and embedding of the configured CLIP model (any export of it) it holds for this content. The text the
OCR model read in this very content is taken either way (with the reader that read it: when that is not the
configured one, the OCR stage reads the image again; until then the text stays searchable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.metadata.reconcile import as_list
from pixdex.indexer.prepare import FromSidecar
from pixdex.indexer.sidecars.embedding import read_embedding
from pixdex.indexer.sidecars.keys import (
    EMBEDDING_MODEL,
    EMBEDDING_OF,
    IMAGE_ID,
    IMAGE_OF,
    MACHINE,
    MODEL,
    REJECTED,
    TEXT_OCR,
    TEXT_OCR_BY,
    TEXT_OCR_OF,
)
from pixdex.indexer.sidecars.naming import sidecar_path
from pixdex.indexer.sidecars.read import read_sidecar


@dataclass(frozen=True)
class Carried:
    image_id: int | None  # pixdex:Id, the id a rebuild (or another machine) gives the image again
    embedding: NDArray[np.float32] | None
    machine: list[str]  # the machine keywords, minus those a person rejected
    models: tuple[str | None, str | None]  # the models that made them (CLIP, keywords)
    usable: bool  # taken instead of a decode and the models
    ocr: tuple[str, str] | None = None  # (the reader, the text it read) for this content: no OCR model call


def carried(path: bytes, digest: str, wanted: FromSidecar, dim: int) -> Carried | None:
    """What the sidecar of the image at `path` (content `digest`) carries; None when it has no readable one.
    `dim`: the CLIP embedding's dimension (by name, any)."""
    try:
        xmp = read_sidecar(sidecar_path(Path(os.fsdecode(path)), wanted.naming))
    except SidecarError:
        return None
    image_id = _stored_id(xmp)
    stored_clip, stored_keywords = str(xmp.get(EMBEDDING_MODEL) or ""), str(xmp.get(MODEL) or "")
    clip_id = wanted.clip_id
    if wanted.by_name:
        clip_id = stored_clip if stored_clip.rsplit("@", 1)[0] == clip_id else ""
    vector = read_embedding(xmp, clip_id, digest)
    rejected = set(as_list(xmp.get(REJECTED)))
    machine = [t for t in as_list(xmp.get(MACHINE)) if t not in rejected]
    if wanted.by_name:
        usable = bool(stored_keywords and machine) or vector is not None
    else:
        usable = vector is not None and stored_keywords == wanted.keyword_model and len(vector) == dim
    models = (clip_id, stored_keywords if stored_keywords != clip_id else None) if vector is not None else (None, None)
    return Carried(image_id, vector, machine, models, usable, ocr_of(xmp, digest))


def carried_id(path: bytes, digest: str, naming: str) -> int | None:
    """The id the sidecar of the image at `path` carries when it describes this very content (its embedding is of
    `digest`): an indexed image whose own sidecar came back (restored from the trash after the image) takes it."""
    try:
        xmp = read_sidecar(sidecar_path(Path(os.fsdecode(path)), naming))
    except SidecarError:
        return None
    return _stored_id(xmp) if digest in (str(xmp.get(EMBEDDING_OF) or ""), str(xmp.get(IMAGE_OF) or "")) else None


def _stored_id(xmp: dict[str, object]) -> int | None:
    stored = str(xmp.get(IMAGE_ID) or "")
    return int(stored) if stored.isdigit() and 0 < int(stored) < 2**63 else None


def ocr_of(xmp: dict[str, Any], digest: str) -> tuple[str, str] | None:
    """The OCR reader and the text it read, when the sidecar says it read this very content (`digest`)."""
    reader = str(xmp.get(TEXT_OCR_BY) or "")
    if not reader or str(xmp.get(TEXT_OCR_OF) or "") != digest:
        return None
    return reader, str(xmp.get(TEXT_OCR) or "")
