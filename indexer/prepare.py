"""What the decode pool runs for one image (`prepare`): read, hash, decode, preprocess, the image's own metadata —
or, when its sidecar carries what the models would make of this content, a probe of its header instead.
The perceptual hash (`phash`) is computed here, from the decoded image. Also the decodes of an uploaded query
image (`prepare_query_image`) and of an image for the vision LLM (`prepare_for_llm`).

The indexing process imports this module to name the jobs it schedules; the modules that read metadata with
pyexiv2 (`metadata.image`, `sidecars.carried`) are imported inside the jobs, in the worker, so that process
never loads exiv2, rdflib or lxml.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pixdex.indexer import faults
from pixdex.indexer.captured import Captured
from pixdex.indexer.catalog.phashes import Phash
from pixdex.indexer.catalog.rows import FileStat
from pixdex.indexer.decode import ExifFacts, decode_image, probe_image
from pixdex.indexer.digest import content_hash
from pixdex.indexer.errors import ReadError
from pixdex.indexer.files import MAX_BYTES, read_regular
from pixdex.indexer.phash import perceptual_hash
from pixdex.indexer.preprocess import ClipTransform, clip_preprocess, wd14_preprocess


@dataclass(frozen=True)
class FromSidecar:
    """The models whose results the decoder may take from an image's sidecar instead of running them
    (`sidecars.carried`), and where the sidecar is."""

    clip_id: str  # the CLIP model id; by name (reduced mode): the configured model's folder name
    keyword_model: str  # the keyword model id (the tagger's, else the CLIP model's); "" by name
    parent: str
    naming: str
    by_name: bool = False  # reduced mode: any keywords, and an embedding by any export of `clip_id`


@dataclass(frozen=True)
class DecodeSpec:
    min_side: int
    max_pixels: int
    clip: ClipTransform | None  # None without models: read size, dates and metadata only
    tagger_size: int | None
    known_hash: str | None = None  # content already indexed under this id: skip decoding if unchanged
    # Take the embedding and keywords from the image's sidecar when it holds them for these models and this very
    # content — no decode, no model (`sidecars.carried`).
    from_sidecar: FromSidecar | None = None
    dim: int = 0  # the CLIP embedding's dimension
    max_bytes: int = MAX_BYTES  # larger files are not read
    # Known content whose sidecar changed: the id that sidecar carries for this content (`Prepared.sidecar_id`).
    sidecar_id_of: str | None = None  # the sidecar naming


@dataclass
class Prepared:
    stat: FileStat
    digest: str
    same_content: bool = False
    width: int = 0
    height: int = 0
    exif: ExifFacts = field(default_factory=ExifFacts)
    embedded: dict[str, Any] = field(default_factory=dict)  # metadata.Embedded.as_dict(): the image's own
    clip_input: NDArray[np.float32] | None = None
    tag_input: NDArray[np.float32] | None = None
    embedding: NDArray[np.float32] | None = None  # from the sidecar
    machine_tags: list[str] = field(default_factory=list)
    from_sidecar: bool = False  # `machine_tags` (and `embedding`, if any) were taken from the sidecar
    models: tuple[str | None, str | None] = (None, None)  # the models that made them (CLIP, keywords)
    sidecar_id: int | None = None  # the catalog id its sidecar carries (pixdex:Id): a rebuild's is kept
    # `sidecar_id` is the one the sidecar records for this very content (a sidecar that came back: an indexed row
    # of this content may take it back, `Commands._store_one`).
    sidecar_id_checked: bool = False
    ocr: tuple[str, str] | None = None  # (reader, text) its sidecar carries for this content (pixdex:TextOCR)
    phash: Phash | None = None  # the perceptual hash of the decoded pixels (None: not decoded, see phash_backfill)
    warnings: str = ""  # what the libraries printed while reading it


def prepare(path: bytes, spec: DecodeSpec) -> Prepared:
    """Read, hash, decode and preprocess one image. Raises ReadError (or OSError) for this file; what
    the libraries printed on the way is in `Prepared.warnings` (or the error's reason)."""
    captured = Captured()
    failed: ReadError | None = None
    with captured:
        try:
            item = _prepare(path, spec)
        except ReadError as exc:
            failed = exc
    if failed is not None:
        if captured.text:
            raise ReadError(failed.path, f"{failed.reason} (the libraries said: {captured.text[:500]})") from None
        raise failed
    item.warnings = captured.text
    return item


def _prepare(path: bytes, spec: DecodeSpec) -> Prepared:
    faults.crash_on(path)
    faults.hold("decode", [path])
    data, st = read_regular(path, spec.max_bytes)
    item = Prepared(FileStat.of(path, st), content_hash(data))
    if item.digest == spec.known_hash:
        item.same_content = True
        if spec.sidecar_id_of is not None:
            from pixdex.indexer.sidecars.carried import carried_id  # late: pyexiv2, in the worker only

            item.sidecar_id = carried_id(path, item.digest, spec.sidecar_id_of)
        return item
    if spec.from_sidecar is not None and _from_sidecar(item, data, path, spec):
        return item
    decoded = decode_image(data, os.fsdecode(path), spec.min_side, spec.max_pixels)
    item.width, item.height, item.exif = decoded.width, decoded.height, decoded.exif
    item.phash = perceptual_hash(decoded.image)  # from the pixels already decoded: no second decode
    if spec.clip is not None:
        item.clip_input = clip_preprocess(decoded.image, spec.clip)
    if spec.clip is not None and spec.tagger_size:
        item.tag_input = wd14_preprocess(decoded.image, spec.tagger_size)
    from pixdex.indexer.metadata.image import embedded_metadata  # late: pyexiv2, in the worker only

    item.embedded = embedded_metadata(data).as_dict()
    return item


def _from_sidecar(item: Prepared, data: bytes, path: bytes, spec: DecodeSpec) -> bool:
    """Fill `item` from the image's sidecar when it carries what the models would make of this content: the
    image is then only probed (header, EXIF, metadata), never decoded. The id and the OCR model's reading it
    carries are taken either way."""
    from pixdex.indexer.metadata.image import embedded_metadata  # late: pyexiv2, in the worker only
    from pixdex.indexer.sidecars.carried import carried  # late: pyexiv2 and rdflib, in the worker only

    assert spec.from_sidecar is not None
    found = carried(path, item.digest, spec.from_sidecar, spec.dim)
    if found is None:
        return False
    item.sidecar_id, item.ocr = found.image_id, found.ocr
    if spec.sidecar_id_of is not None and found.image_id is not None:  # the sidecar changed: is it this content's?
        from pixdex.indexer.sidecars.carried import carried_id  # late: pyexiv2, in the worker only

        item.sidecar_id = carried_id(path, item.digest, spec.sidecar_id_of)
        item.sidecar_id_checked = item.sidecar_id is not None
    if not found.usable:
        return False
    item.width, item.height, item.exif = probe_image(data, os.fsdecode(path), spec.max_pixels)
    item.embedding, item.machine_tags, item.from_sidecar, item.models = found.embedding, found.machine, True, \
        found.models
    item.embedded = embedded_metadata(data).as_dict()
    return True


def prepare_query_image(data: bytes, name: str, spec: DecodeSpec) -> NDArray[np.float32]:
    """An uploaded query image, decoded and preprocessed for CLIP (in a worker: Pillow never runs in
    the process that serves queries). Raises ReadError naming the upload."""
    if spec.clip is None:
        raise ReadError(name, "searching by image needs the CLIP model")
    decoded = decode_image(data, name, spec.min_side, spec.max_pixels)
    return clip_preprocess(decoded.image, spec.clip)


def prepare_for_llm(path: bytes, max_side: int, max_pixels: int, max_bytes: int = MAX_BYTES) -> tuple[bytes, str]:
    """The image as a vision LLM gets it: EXIF orientation applied, at most `max_side` on its long side,
    JPEG; with the content hash it was read at. Raises ReadError naming the file."""
    image_path = os.fsdecode(path)
    try:
        data, _st = read_regular(path, max_bytes)
    except OSError as exc:
        raise ReadError(image_path, f"cannot read: {exc.strerror or exc}") from None
    with Captured():
        decoded = decode_image(data, image_path, max_side, max_pixels)
    image = decoded.image
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue(), content_hash(data)
