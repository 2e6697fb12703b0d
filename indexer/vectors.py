"""The usearch vector index: a cache of the catalog's embeddings, for the writer and for readers.

The catalog holds every embedding (the source of truth). ``vectors.usearch`` is an HNSW file
(cosine, keyed by catalog id) and ``vectors.json`` its manifest: model id, dimension, metric,
scalar type and the catalog generation the file reflects. The writer keeps the whole index in
memory, applies each commit to it, and saves it now and then (temp file + rename: a reader's
memory map of the old file stays valid). On open it tops the index up from the catalog with what
changed after the file's generation; a broken or mismatched file is moved aside and rebuilt from
the stored embeddings, with no inference.

While a newly configured CLIP model re-embeds the library, its index lives in ``vectors/next/``
and readers keep using the live model's file; when every image that has a live vector also has a
new one, the writer makes the new model live (`promote`: its file moves to ``vectors/``).

Readers (`VectorView`) memory-map the file and add the *delta*: embeddings of rows the catalog
stamped after the file's generation, searched exactly, while those rows' stale entries in the file
are ignored. So a reader in any process sees every commit without the file being rewritten per
commit, and the cost of a commit stays proportional to the change.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from usearch.index import Index

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.files import atomic_write, remove_stale_temps_in, temp_name
from pixdex.indexer.layout import Layout
from pixdex.indexer.sections import IndexSettings

log = logging.getLogger(__name__)

METRIC = "cos"
OVERFETCH = 1.5  # a wide filter's candidates: this many times what its share says it takes to find `count`
EXACT_LIMIT = 50_000  # searches over at most this many vectors (or filtered candidates) are exact
ADD_CHUNK = 10_000


def identity(model_id: str, ndim: int, settings: IndexSettings) -> dict[str, Any]:
    return {"model": model_id, "ndim": ndim, "metric": METRIC, "dtype": settings.dtype}


def read_manifest(layout: Layout, building: bool = False) -> dict[str, Any] | None:
    try:
        value = json.loads(layout.vector_files(building)[1].read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def new_index(ndim: int, settings: IndexSettings) -> Index:
    return Index(ndim=ndim, metric=METRIC, dtype=settings.dtype, connectivity=settings.connectivity,
                 expansion_search=settings.expansion_search)


def _same(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return {k: stored.get(k) for k in wanted} == wanted


class VectorIndex:
    """The writer's index: all vectors of the current model in memory, saved as a cache."""

    def __init__(self, layout: Layout, model_id: str, ndim: int, settings: IndexSettings,
                 building: bool = False) -> None:
        self.file, self.manifest = layout.vector_files(building)
        self.file.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps_in(self.file.parent)  # a save cut short by a crash
        self.layout = layout
        self.model_id = model_id
        self.ndim = ndim
        self.settings = settings
        self.building = building  # a new model's index beside the live one's (vectors/next)
        self.identity = identity(model_id, ndim, settings)
        self.reset_reason: str | None = None
        self.generation = 0  # the catalog generation this index reflects
        self.saved_generation = 0
        self.unsaved = 0  # vectors added or removed since the last save
        self.last_save = time.monotonic()
        self._adopt_other_place()
        self.index = self._open()

    def _adopt_other_place(self) -> None:
        """A crash between the catalog making this model live and `promote` leaves its file in next/: take
        it. Live again without having been promoted (a switch given up): a next/ file is of no use."""
        if self.building:
            return
        other_file, other_manifest = self.layout.vector_files(building=True)
        stored = read_manifest(self.layout, building=True)
        mine = read_manifest(self.layout) or {}
        if stored is not None and other_file.exists() and _same(stored, self.identity) \
                and not _same(mine, self.identity):
            os.replace(other_file, self.file)
            os.replace(other_manifest, self.manifest)
        shutil.rmtree(self.layout.next_vectors, ignore_errors=True)

    def _open(self) -> Index:
        file = self.file
        if not file.exists():
            self.reset_reason = "no vector index file yet: building it from the catalog"
            return new_index(self.ndim, self.settings)
        stored = read_manifest(self.layout, self.building) or {}
        if not _same(stored, self.identity):
            self.reset_reason = (f"vector index was built for {stored.get('model')} ({stored.get('ndim')}-d, "
                                 f"{stored.get('dtype')}), now {self.model_id}: rebuilding it from the catalog")
            return self._aside("mismatch")
        index = new_index(self.ndim, self.settings)
        try:
            index.load(str(file))
        except Exception as exc:  # noqa: BLE001 - usearch raises plain RuntimeError/ValueError on a bad file
            self.reset_reason = f"vector index {file} is unreadable ({exc}): rebuilding it from the catalog"
            return self._aside("broken")
        self.generation = self.saved_generation = int(stored.get("generation", 0))
        return index

    def _aside(self, why: str) -> Index:
        log.warning("%s", self.reset_reason)
        os.replace(self.file, self.file.with_name(f"{self.file.name}.{why}"))  # kept for inspection
        self.manifest.unlink(missing_ok=True)
        return new_index(self.ndim, self.settings)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: int) -> bool:
        return bool(self.index.contains(key))

    def add(self, ids: list[int], vectors: NDArray[np.float32]) -> None:
        self.remove(ids)
        if ids:
            self.index.add(np.array(ids, dtype=np.uint64), vectors)
            self.unsaved += len(ids)

    def remove(self, ids: Iterable[int]) -> None:
        keys = np.fromiter(ids, dtype=np.uint64)
        if not len(keys) or not len(self.index):
            return
        present = keys[np.asarray(self.index.contains(keys), dtype=bool).reshape(-1)]
        if len(present):
            self.index.remove(present)
            self.unsaved += len(present)

    def top_up(self, catalog: Catalog) -> int:
        """Apply what the catalog committed after this index's generation; returns how many ids it touched."""
        target = catalog.generation()
        if self.generation > target:  # a file newer than its catalog (restored from a backup): start over
            log.warning("vector index file is at generation %d, the catalog at %d: rebuilding it",
                        self.generation, target)
            self.generation = 0
        if self.generation == 0:  # from scratch: bulk load every stored embedding of this model
            if len(self.index):
                self.index = new_index(self.ndim, self.settings)
            touched = 0
            batch_ids: list[int] = []
            batch: list[NDArray[np.float32]] = []
            for image_id, vector in catalog.embeddings(self.model_id):
                batch_ids.append(image_id)
                batch.append(vector)
                if len(batch_ids) == ADD_CHUNK:
                    self.add(batch_ids, np.stack(batch))
                    touched += len(batch_ids)
                    batch_ids, batch = [], []
            if batch_ids:
                self.add(batch_ids, np.stack(batch))
                touched += len(batch_ids)
        else:
            changed, gone = catalog.changed_ids_since(self.generation)
            fresh = dict(catalog.embeddings(self.model_id, since=self.generation))
            self.remove([*gone, *(i for i in changed if i not in fresh)])
            if fresh:
                self.add(list(fresh), np.stack(list(fresh.values())))
            touched = len(changed) + len(gone)
        self.generation = target
        return touched

    def due(self) -> bool:
        """Whether the file should be saved now (changes piled up, or changes and time passed)."""
        if self.generation == self.saved_generation and not self.unsaved:
            return False
        return self.unsaved >= self.settings.save_changes or \
            time.monotonic() - self.last_save >= self.settings.save_seconds

    def promote(self) -> None:
        """This (building) model became live in the catalog: its file replaces the old model's in vectors/
        (a reader's map of the old file stays valid), and next/ goes."""
        self.file, self.manifest = self.layout.vector_files()
        self.building = False
        self.unsaved = max(self.unsaved, 1)  # written to its new place even when nothing changed
        self.save()
        shutil.rmtree(self.layout.next_vectors, ignore_errors=True)

    def save(self) -> None:
        """Write the file (temp + rename) and its manifest, if anything changed since the last save."""
        if self.generation == self.saved_generation and not self.unsaved and self.file.exists():
            return
        file = self.file
        temp = temp_name(file.parent)
        try:
            self.index.save(str(temp))
            os.replace(temp, file)
        finally:
            temp.unlink(missing_ok=True)
        atomic_write(self.manifest, json.dumps({**self.identity, "generation": self.generation}).encode())
        self.saved_generation = self.generation
        self.unsaved = 0
        self.last_save = time.monotonic()


@dataclass(frozen=True)
class Admit:
    """A filter that lets many ids through, as the vector side sees it: its estimated share of the library and
    a check of candidate ids (returns those it lets through)."""

    share: float
    check: Callable[[list[int]], set[int]]


class VectorView:
    """A reader's vectors: the saved file (memory-mapped) plus the catalog's newer embeddings."""

    def __init__(self, layout: Layout, model_id: str, ndim: int, settings: IndexSettings) -> None:
        self.layout = layout
        self.model_id = model_id
        self.ndim = ndim
        self.settings = settings
        self.identity = identity(model_id, ndim, settings)
        self.exact_limit = EXACT_LIMIT
        self.base: Index | None = None
        self.base_generation = 0
        self.base_stamp: tuple[tuple[int, int] | None, ...] | None = None
        self.note: str | None = None
        self.delta: dict[int, NDArray[np.float32]] = {}
        self.stale: set[int] = set()  # ids stamped after the base file: its entries for them are not current
        self.shadowed: set[int] = set()  # those of them the base file holds (what a base search must skip)
        self._delta_ids: list[int] = []
        self._delta_matrix: NDArray[np.float32] | None = None  # the delta stacked once per refresh
        self.seen = -1

    def refresh(self, catalog: Catalog, generation: int) -> None:
        """Catch up with the catalog at `generation` (cheap when nothing changed)."""
        if self._file_stamp() != self.base_stamp:
            self._open_base()
            self.seen = -1
        if generation == self.seen:
            return
        since = self.base_generation if self.seen < 0 else self.seen
        if self.seen < 0:
            self.delta, self.stale, self.shadowed = {}, set(), set()
        rows, gone = catalog.changed_since(since)
        ids = [r.id for r in rows]
        fresh = dict(catalog.embeddings(self.model_id, ids=ids))
        for image_id in [*ids, *gone]:
            self.stale.add(image_id)
            if self._in_base(image_id):
                self.shadowed.add(image_id)
            vector = fresh.get(image_id)
            if vector is None:
                self.delta.pop(image_id, None)
            else:
                self.delta[image_id] = vector
        self._delta_ids = list(self.delta)
        self._delta_matrix = np.stack([self.delta[i] for i in self._delta_ids]) if self.delta else None
        self.seen = generation

    def _file_stamp(self) -> tuple[tuple[int, int] | None, ...]:
        """Both places' manifests (each is replaced, new inode, when its file is saved)."""
        stamps: list[tuple[int, int] | None] = []
        for building in (False, True):
            try:
                st = self.layout.vector_files(building)[1].stat()
                stamps.append((st.st_ino, st.st_mtime_ns))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def _open_base(self) -> None:
        self.base, self.base_generation, self.note = None, 0, None
        self.base_stamp = self._file_stamp()
        stored = read_manifest(self.layout)
        file = self.layout.vector_file
        if stored is not None and not _same(stored, self.identity):  # a model being built is in next/
            building = read_manifest(self.layout, building=True)
            if building is not None and _same(building, self.identity):
                stored, file = building, self.layout.vector_files(building=True)[0]
        if stored is None or not file.exists():
            self.note = "no vector index file yet"
            return
        if not _same(stored, self.identity):
            self.note = f"the vector index file was built for {stored.get('model')}, not {self.model_id}"
            return
        index = new_index(self.ndim, self.settings)
        try:
            index.view(str(file))
        except Exception as exc:  # noqa: BLE001 - a broken file: the writer rebuilds it; until then the delta serves
            self.note = f"the vector index file is unreadable ({exc})"
            return
        self.base, self.base_generation = index, int(stored.get("generation", 0))

    def __len__(self) -> int:
        base = len(self.base) if self.base is not None else 0
        return base + len(self.delta) - len(self.shadowed)

    def _in_base(self, image_id: int) -> bool:
        return self.base is not None and bool(self.base.contains(image_id))

    def __contains__(self, image_id: int) -> bool:
        return image_id in self.delta or (image_id not in self.stale and self._in_base(image_id))

    def get(self, image_id: int) -> NDArray[np.float32]:
        if image_id in self.delta:
            return self.delta[image_id]
        assert self.base is not None
        return np.asarray(self.base.get(np.uint64(image_id)), dtype=np.float32).reshape(-1)

    def search(self, query: NDArray[np.float32], count: int, allowed: set[int] | Admit | None = None,
               ) -> list[tuple[int, float]]:
        """The `count` nearest ids with cosine similarity, restricted to `allowed` when given: a set of ids (a
        narrow filter: an exact search over them), or an `Admit` (a wide one: the graph's nearest, over-fetched
        by the filter's share, checked)."""
        if count <= 0:
            return []
        if isinstance(allowed, Admit):
            hits = self._search_admitted(query, count, allowed)
        else:
            hits = self._search_base(query, count, allowed)
        hits += self._search_delta(query, count, allowed)
        hits.sort(key=lambda h: -h[1])
        return hits[:count]

    def _search_delta(self, query: NDArray[np.float32], count: int, allowed: set[int] | Admit | None,
                      ) -> list[tuple[int, float]]:
        if self._delta_matrix is None:
            return []
        scores = self._delta_matrix @ query.astype(np.float32)
        if allowed is not None:
            admitted = allowed.check(self._delta_ids) if isinstance(allowed, Admit) else allowed
            keep = np.fromiter((i in admitted for i in self._delta_ids), dtype=bool, count=len(self._delta_ids))
            scores = np.where(keep, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[:count]
        return [(self._delta_ids[n], float(scores[n])) for n in order if np.isfinite(scores[n])]

    def _search_base(self, query: NDArray[np.float32], count: int, allowed: set[int] | None,
                     ) -> list[tuple[int, float]]:
        base = self.base
        if base is None or len(base) == 0:
            return []
        share = 1.0
        if allowed is not None:
            if len(allowed) <= self.exact_limit:
                keys = np.array(sorted(allowed - self.stale), dtype=np.uint64)
                present = keys[np.asarray(base.contains(keys), dtype=bool)] if len(keys) else keys
                return self._exact(base, query, count, [int(k) for k in present])
            share = len(allowed) / len(base)
        # Shadowed entries are spread at random over the file: over-fetch by their share (and the filter's),
        # widen if short.
        fetch = min(len(base), int(count * len(base) / max(1, len(base) - len(self.shadowed)) / share) + 16)
        exact = len(base) <= self.exact_limit  # a brute-force pass is ~2 ms at 50k and misses nothing
        while True:
            matches = base.search(query, min(fetch, len(base)), exact=exact)
            hits = [(int(k), 1.0 - float(d)) for k, d in zip(matches.keys, matches.distances, strict=True)
                    if int(k) not in self.stale and (allowed is None or int(k) in allowed)]
            if len(hits) >= count or exact:
                return hits[:count]
            if fetch >= len(base):  # the graph walk does not reach every node: asked for all, go exhaustive
                exact = True
            fetch *= 4

    def _search_admitted(self, query: NDArray[np.float32], count: int, admit: Admit) -> list[tuple[int, float]]:
        """A wide filter: the graph's nearest `count / share` (and more while short), then the filter's check
        on those candidates alone — never a list of every id it lets through."""
        base = self.base
        if base is None or len(base) == 0:
            return []
        size = len(base)
        live = max(1, size - len(self.shadowed)) / size
        fetch = min(size, int(count / max(admit.share * live, 1e-6) * OVERFETCH) + 16)
        exact = size <= self.exact_limit
        while True:
            matches = base.search(query, min(fetch, size), exact=exact)
            found = [(int(k), 1.0 - float(d)) for k, d in zip(matches.keys, matches.distances, strict=True)
                     if int(k) not in self.stale]
            admitted = admit.check([k for k, _ in found])
            hits = [h for h in found if h[0] in admitted]
            if len(hits) >= count or exact:
                return hits[:count]
            if fetch >= size:
                exact = True
            fetch *= 4

    @staticmethod
    def _exact(base: Index, query: NDArray[np.float32], count: int, ids: list[int]) -> list[tuple[int, float]]:
        if not ids:
            return []
        vectors: Any = base.get(np.array(ids, dtype=np.uint64), dtype="f32")
        scores = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1) @ query.astype(np.float32)
        order = np.argsort(-scores, kind="stable")[:count]
        return [(ids[i], float(scores[i])) for i in order]
