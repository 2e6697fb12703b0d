"""Hybrid search: parse → vector side + text side under the same filters → fuse → results.

`SearchService` is what the CLI (and later the daemon's routes) call; it reads the stores and
never writes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pixdex.daemon.config import Config
from pixdex.indexer.decode import decode_image
from pixdex.indexer.embedder import ClipModel
from pixdex.indexer.errors import ReadError, display_path
from pixdex.indexer.writer import Stores
from pixdex.query.fuse import Fused, rrf
from pixdex.query.parse import Filters, Query, QueryError, parse_query
from pixdex.query.text import matching_ids, newest, text_hits
from pixdex.query.vector import mean_embedding, query_embedding

MAX_K = 10_000


@dataclass(frozen=True)
class Hit:
    id: int
    path: str
    score: float
    vector_rank: int | None
    vector_score: float | None
    text_rank: int | None
    text_score: float | None
    tags: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Results:
    query: str
    hits: list[Hit]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query, "notes": self.notes, "hits": [h.as_dict() for h in self.hits]}


def check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k = {k} is out of range; use a number from 1 to {MAX_K}")
    return k


class SearchService:
    def __init__(self, config: Config, stores: Stores, clip: ClipModel) -> None:
        self.config = config
        self.stores = stores
        self.clip = clip

    def search(self, raw: str, k: int | None = None, cwd: Path | None = None) -> Results:
        k = check_k(self.config.search.k if k is None else k)
        query = parse_query(raw, cwd)
        if not query.has_text:
            found = newest(self.stores.fulltext, query.filters, k)
            note = "only filters given: listing the matching images, newest first"
            return Results(raw, self._hits([Fused(i, 0.0, None, None) for i, _ in found]), [note])
        vector = self._vector_side(query_embedding(self.clip, query), query.filters)
        text = text_hits(self.stores.fulltext, query.text, query.filters, self.config.search.candidates)
        return Results(raw, self._fuse(vector, text, k), self._stale_notes())

    def _stale_notes(self) -> list[str]:
        reason = self.stores.vectors.reset_reason
        if reason and self.stores.catalog.counts()["done"]:
            return [f"{reason.split(':')[0]}; text results only until `pixdex index` runs"]
        return []

    def similar(self, images: list[Path], k: int | None = None, raw_filters: str = "",
                cwd: Path | None = None) -> Results:
        k = check_k(self.config.search.k if k is None else k)
        if not images:
            raise QueryError("similar needs at least one image")
        filters = parse_query(raw_filters, cwd).filters if raw_filters else Filters()
        vectors, own_ids = self._image_vectors(images)
        found = self._vector_side(mean_embedding(vectors), filters, exclude=own_ids)
        return Results(" ".join(display_path(p) for p in images), self._fuse(found, [], k))

    def _vector_side(self, embedding: NDArray[np.float32], filters: Filters,
                     exclude: set[int] | None = None) -> list[tuple[int, float]]:
        allowed = matching_ids(self.stores.fulltext, filters)
        if allowed is not None and exclude:
            allowed -= exclude
        count = self.config.search.candidates + len(exclude or ())
        hits = self.stores.vectors.search(embedding, count, allowed)
        return [h for h in hits if h[0] not in (exclude or ())][: self.config.search.candidates]

    def _image_vectors(self, images: list[Path]) -> tuple[NDArray[np.float32], set[int]]:
        rows, own = [], set()
        for image in images:
            path = Path(os.path.abspath(image))
            row = self.stores.catalog.by_path(os.fsencode(path))
            if row is not None and row.state == "done" and row.id in self.stores.vectors:
                rows.append(self.stores.vectors.get([row.id])[0])
                own.add(row.id)
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ReadError(path, f"cannot read query image: {exc.strerror or exc}") from exc
            decoded = decode_image(data, str(path), self.clip.image_size, self.config.decode.max_pixels)
            rows.append(self.clip.embed_images(self.clip.preprocess(decoded.image)[None])[0])
        return np.stack(rows), own

    def _fuse(self, vector: list[tuple[int, float]], text: list[tuple[int, float]], k: int) -> list[Hit]:
        s = self.config.search
        fused = rrf(vector, text, k=s.rrf_k, vector_weight=s.vector_weight, text_weight=s.text_weight)
        return self._hits(fused, k)

    def _hits(self, fused: list[Fused], k: int | None = None) -> list[Hit]:
        rows = self.stores.catalog.get_many(f.id for f in fused)
        hits = []
        for f in fused:
            row = rows.get(f.id)
            if row is None or row.state != "done":
                continue  # an index entry the catalog no longer vouches for
            hits.append(Hit(f.id, display_path(row.path), round(f.score, 6),
                            f.vector.rank if f.vector else None,
                            round(f.vector.score, 6) if f.vector else None,
                            f.text.rank if f.text else None, round(f.text.score, 6) if f.text else None,
                            [str(t["name"]) for t in row.tag_list]))
            if k is not None and len(hits) == k:
                break
        return hits
