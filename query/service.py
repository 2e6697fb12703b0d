"""Hybrid search: parse → vector side + text side under the same filters → fuse → results.

`SearchService` is what the CLI (and the daemon's routes) call. It reads through a `Reader` and
never writes; the query-time text tower is its own (few threads, unloaded when idle), separate
from the indexing worker's image tower. With no CLIP model, or none of its vectors yet, the
answer is text-only and says so. Over a data directory where nothing was indexed, it answers
empty and creates nothing.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.cliptags import cache_path, load_matrix, vocabulary
from pixdex.indexer.collections import Collection, all_collections, find
from pixdex.indexer.embedder import ClipModel
from pixdex.indexer.errors import ModelError, ReadError
from pixdex.indexer.modelcache import ModelCache
from pixdex.indexer.paths import display_path
from pixdex.indexer.settings import Config, runtime
from pixdex.query.fuse import Fused, rrf
from pixdex.query.parse import Filters, QueryError, nothing_to_look_for, parse_query
from pixdex.query.reader import Reader, TextSnapshot
from pixdex.query.text import newest, restriction, text_hits
from pixdex.query.vector import combine, mean_embedding, query_embedding, segment_embeddings

MAX_K = 10_000
HIT_MARGIN = 8  # rows read beyond k at once: a few candidates may have left the catalog since they were indexed


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
    mtime_ns: int  # the file's, as catalogued: a key for caches of its thumbnail
    raw_path: bytes = field(default=b"", repr=False)  # the exact bytes, for `-0` output

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "raw_path"}


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
    def __init__(self, config: Config, reader: Reader,
                 embed_file: Callable[[Any, Path], NDArray[np.float32]] | None = None) -> None:
        """`embed_file(clip, path)`: how a query image that is not indexed is embedded (the command line's
        `query.image_query.embed_file`; the daemon has none: it decodes nothing in the serving process)."""
        self.config = config
        self.reader = reader
        self._embed_file = embed_file
        self._models: dict[str, Any] = {}  # CLIP models by folder name: the live one, the configured one
        self._errors: dict[str, tuple[str, float]] = {}  # why one could not load, and when
        self._clip_error: str | None = None
        self._load_lock = threading.Lock()
        self._vocab_key: Any = None
        self._vocab: NDArray[np.float32] | None = None
        self._vocab_concepts: list[str] = []

    def clip(self) -> Any:
        """The CLIP model for queries (text tower on `models.query_threads`), or None with a reason."""
        return self.query_model()[0]

    def query_model(self) -> tuple[Any, str | None]:
        """The CLIP model whose vectors searches use, and a note while a new model re-embeds the library.

        That is the catalog's live model: while a newly configured one re-embeds the images, queries keep
        using the old model's text tower and vectors, so every image stays findable by likeness; once all
        have new vectors the writer makes the new model live. A live model whose files are gone gives way
        to the configured one (only the images it has embedded so far are found by likeness then).
        """
        wanted = self.config.models.clip
        live = self.reader.catalog().live_model() if self.reader.exists() else None
        if live is not None:
            name = live.rsplit("@", 1)[0]
            model = self._model(name)
            if model is not None and model.id == live:
                if name == wanted:
                    return model, None
                return model, (f"re-embedding the library with {wanted}: searching with {name} until every "
                               "image has its new vector (`pixdex status` shows how far it is)")
        model = self._model(wanted)
        if model is not None and live is not None and model.id != live:
            return model, (f"the live model {live.rsplit('@', 1)[0]} cannot be loaded ({self._error_of(live)}); "
                           f"likeness covers only the images {wanted} has embedded so far")
        return model, None

    def _error_of(self, live: str) -> str:
        name = live.rsplit("@", 1)[0]
        return self._errors.get(name, ("its files changed",))[0]

    def _model(self, name: str) -> Any:
        """The CLIP model in `<model_dir>/clip/<name>`, loaded once (None when it cannot load: the reason is
        kept, and it is tried again after 5 s, so a long-lived service sees models that appear later)."""
        with self._load_lock:
            if name in self._models:
                return self._models[name]
            failed = self._errors.get(name)
            if failed is not None and time.monotonic() - failed[1] <= 5.0:
                self._clip_error = failed[0]
                return None
            try:
                model = ClipModel(self.config.model_dir / "clip" / name, self.config.models.query_threads,
                                  ModelCache(self.config.models.idle_ttl), runtime(self.config))
            except ModelError as exc:
                self._errors[name] = (str(exc), time.monotonic())
                self._clip_error = str(exc)
                return None
            self._errors.pop(name, None)
            self._models[name] = model
            return model

    def loaded_models(self) -> list[str]:
        """The query-time model sessions loaded now (without loading any)."""
        loaded: list[str] = []
        for model in list(self._models.values()):
            cache = getattr(getattr(model, "textual", None), "cache", None)
            if cache is not None:
                loaded += [str(k[0] if isinstance(k, tuple) else k) for k in cache.loaded()]
        return list(dict.fromkeys(loaded))

    def collections(self) -> list[Collection]:
        return all_collections(self.config, self.reader.catalog() if self.reader.exists() else None)

    def resolve(self, filters: Filters, scope: tuple[str, ...] | None = None) -> Filters:
        """`in:NAME` filters become folder groups; `scope` (a token's folders) is one more group."""
        if not filters.collections and not filters.not_collections and scope is None:
            return filters
        known = self.collections()
        within = list(filters.within)
        if filters.collections:
            within.append(tuple(display_path(find(known, n).path) for n in filters.collections))
        if scope is not None:
            within.append(scope)
        not_folders = filters.not_folders + tuple(display_path(find(known, n).path) for n in filters.not_collections)
        return dataclasses.replace(filters, collections=(), not_collections=(), within=tuple(within),
                                   not_folders=not_folders)

    def search(self, raw: str, k: int | None = None, cwd: Path | None = None,
               scope: tuple[str, ...] | None = None,
               images: list[tuple[NDArray[np.float32], float]] | None = None) -> Results:
        """`scope`: the only folders the caller may see (a limited token), or None for all. `images`:
        embeddings of query images with their weights (negative: away from it), added to the text's."""
        k = check_k(self.config.search.k if k is None else k)
        query = parse_query(raw, cwd)
        if not query.has_text and not images and query.filters.empty:
            raise QueryError(nothing_to_look_for(raw))
        query = dataclasses.replace(query, filters=self.resolve(query.filters, scope))
        notes = query.notes
        text = self.reader.text() if self.reader.exists() else None
        if text is None:
            return Results(raw, [], [*notes, self._nothing_note()])
        if not query.has_text and not images:
            found = newest(text, query.filters, k)
            notes.append("only filters given: listing the matching images, newest first")
            return Results(raw, self._hits([Fused(i, 0.0, None, None) for i, _ in found]), notes)
        vector: list[tuple[int, float]] = []
        segments: NDArray[np.float32] | None = None
        clip, switching = self.query_model()
        if switching:
            notes.append(switching)
        if clip is None:  # the whole reason (long, with the commands that fix it) is in `pixdex status`
            notes.append(f"text results only: the CLIP model {self.config.models.clip} is not loaded; "
                         "`pixdex status` says why and how to install it")
        else:

            segments = segment_embeddings(clip, query) if query.has_text else None
            wanted = query_embedding(clip, query, segments) if segments is not None else None
            vector = self._vector_side((clip.id, clip.dim), text, combine(wanted, images or []), query.filters,
                                       notes=notes, count=max(k, self.config.search.candidates))
        related: tuple[str, ...] = ()
        if clip is not None and segments is not None:
            related = self._related_tags(clip, query.positive, segments[: len(query.positive)], notes)
        words = text_hits(text, query.text, query.filters, max(k, self.config.search.candidates), related) \
            if query.has_text else []
        return Results(raw, self._fuse(vector, words, k), notes)

    def _related_tags(self, clip: Any, segments: tuple[str, ...], embedded: NDArray[np.float32], notes: list[str]
                      ) -> tuple[str, ...]:
        """Vocabulary concepts whose (prompt-ensembled) embeddings are within `search.related_tags` (cosine)
        of a query segment's own embedding — the one the vector side computed, so no extra model call: the
        text side also finds images tagged with them. Needs the vocabulary's embeddings, which the indexing
        side caches; without them (not computed yet, or tags off) nothing is added."""
        s = self.config.search
        if s.related_tags >= 1.0 or s.related_max == 0 or not self.config.clip_tags.enabled:
            return ()
        vocab = self._vocabulary(clip)
        if vocab is None:
            return ()
        concepts, matrix = vocab
        found: list[str] = []
        for segment, vector in zip(segments, embedded, strict=True):
            if not segment.strip():
                continue
            sims = matrix @ vector
            own = segment.strip().casefold()
            near = [concepts[i] for i in np.argsort(-sims)[: s.related_max + 1]
                    if sims[i] >= s.related_tags and concepts[i].casefold() != own][: s.related_max]
            if near:
                notes.append(f"also images tagged with concepts related to “{segment}”: {', '.join(near)}")
                found += near
        return tuple(dict.fromkeys(found))

    def _vocabulary(self, clip: Any) -> tuple[list[str], NDArray[np.float32]] | None:

        key = (clip.id, self.config.clip_tags)
        if self._vocab_key != key:
            concepts = vocabulary(self.config.clip_tags)  # may raise: then nothing is remembered, it is tried again
            self._vocab_key, self._vocab, self._vocab_concepts = key, None, concepts
        if self._vocab is None:
            path = cache_path(self.config.cache_dir / "vocabulary", clip.id, self._vocab_concepts,
                              list(self.config.clip_tags.templates))
            self._vocab = load_matrix(path, len(self._vocab_concepts), clip.dim)  # None until indexing made it
        return (self._vocab_concepts, self._vocab) if self._vocab is not None else None

    def _nothing_note(self) -> str:
        return f"nothing is indexed in {self.reader.layout.root} yet; run `pixdex index`"

    def similar(self, images: list[Path], k: int | None = None, raw_filters: str = "",
                cwd: Path | None = None, scope: tuple[str, ...] | None = None) -> Results:
        k = check_k(self.config.search.k if k is None else k)
        if not images:
            raise QueryError("similar needs at least one image")
        parsed = parse_query(raw_filters, cwd) if raw_filters else None
        filters = self.resolve(parsed.filters if parsed else Filters(), scope)
        notes = list(parsed.notes) if parsed else []
        if parsed is not None and parsed.has_text:
            notes.append(f"only filters narrow similar images; these words were not used: {parsed.text}")
        unreadable = [p for p in images if not os.access(os.path.realpath(p), os.R_OK)]
        if unreadable:  # before the model: a missing file is the first thing to say, with or without one
            _readable_or_raise(unreadable[0])
        clip = self.clip()
        space = (clip.id, clip.dim) if clip is not None else self._stored_space()
        if space is None:
            raise ModelError(self.no_clip_message())
        text = self.reader.text() if self.reader.exists() else None
        vectors, own_ids = self._image_vectors(clip, space, images)
        if text is None:
            return Results(" ".join(display_path(p) for p in images), [], [self._nothing_note()])

        found = self._vector_side(space, text, mean_embedding(vectors), filters, exclude=own_ids,
                                  count=max(k, self.config.search.candidates))
        return Results(" ".join(display_path(p) for p in images), self._fuse(found, [], k), notes)

    def _stored_space(self) -> tuple[str, int] | None:
        """Without a CLIP model that loads: the live model's stored vectors (taken from sidecars, or made before
        its files went), so `similar` of an indexed image still works."""
        if not self.reader.exists():
            return None
        catalog = self.reader.catalog()
        live = catalog.live_model()
        dim = catalog.embedding_dim(live) if live else None
        return (live, dim) if live and dim else None

    def _vector_side(self, space: tuple[str, int], text: TextSnapshot, embedding: NDArray[np.float32], filters: Filters,
                     exclude: set[int] | None = None, notes: list[str] | None = None, count: int = 0,
                     ) -> list[tuple[int, float]]:
        allowed = restriction(text, filters)
        if isinstance(allowed, set) and exclude:
            allowed -= exclude
        wanted = count or self.config.search.candidates
        count = wanted + len(exclude or ())
        with self.reader.vector_lock:
            view = self.reader.vectors(*space)
            hits = view.search(embedding, count, allowed)
            if notes is not None and view.note and not len(view):
                notes.append(f"{view.note}; text results only until `pixdex index` embeds the images")
        return [h for h in hits if h[0] not in (exclude or ())][:wanted]

    def no_clip_message(self) -> str:
        return f"searching by image needs the CLIP model: {self._clip_error}"

    def _image_vectors(self, clip: Any, space: tuple[str, int], images: list[Path]
                       ) -> tuple[NDArray[np.float32], set[int]]:
        """Each image's vector: an indexed one's from the index (no model needed), another's from the model."""

        rows, own = [], set()
        catalog = self.reader.catalog() if self.reader.exists() else None
        for image in images:
            path = Path(os.path.realpath(image))  # a link to an indexed image is that image (left out of its hits)
            row = catalog.by_path(os.fsencode(path)) if catalog else None
            if row is not None and row.state == "done":
                with self.reader.vector_lock:
                    view = self.reader.vectors(*space)
                    if row.id in view:
                        rows.append(view.get(row.id))
                        own.add(row.id)
                        continue
            if clip is None:
                raise ModelError(f"{display_path(path)} is not indexed, and {self.no_clip_message()}")
            if self._embed_file is None:
                raise ReadError(path, "is not indexed; upload it to search by it (POST /search with an image)")
            rows.append(self._embed_file(clip, path))
        return np.stack(rows), own

    def _fuse(self, vector: list[tuple[int, float]], text: list[tuple[int, float]], k: int) -> list[Hit]:
        s = self.config.search
        fused = rrf(vector, text, k=s.rrf_k, vector_weight=s.vector_weight, text_weight=s.text_weight)
        return self._hits(fused, k)

    def _hits(self, fused: list[Fused], k: int | None = None) -> list[Hit]:
        """The catalog's rows of the first `k` fused ids it still vouches for: read a few more than `k` at a time
        (not every candidate's)."""
        catalog = self.reader.catalog()
        step = len(fused) if k is None else k + HIT_MARGIN
        rows: dict[int, Any] = {}
        read = 0
        hits = []
        for n, f in enumerate(fused):
            if n >= read:
                rows.update(catalog.get_many(x.id for x in fused[read:read + step]))
                read += step
            row = rows.get(f.id)
            if row is None or row.state != "done":
                continue  # an index entry the catalog no longer vouches for
            hits.append(Hit(f.id, display_path(row.path), round(f.score, 6),
                            f.vector.rank if f.vector else None,
                            round(f.vector.score, 6) if f.vector else None,
                            f.text.rank if f.text else None, round(f.text.score, 6) if f.text else None,
                            [str(t["name"]) for t in row.tag_list], row.mtime_ns, row.path))
            if k is not None and len(hits) == k:
                break
        return hits


def _readable_or_raise(image: Path) -> None:
    path = Path(os.path.realpath(image))
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ReadError(path, f"cannot read query image: {exc.strerror or exc}") from exc
