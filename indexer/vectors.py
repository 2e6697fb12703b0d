"""The usearch vector index on disk, with a manifest that says what its vectors mean.

``vectors.usearch`` holds one normalised CLIP embedding per catalog id (cosine metric);
``vectors.json`` records model id, dimension, metric and scalar type. A manifest that does
not match the model in use means the vectors are discarded and re-embedded — never a crash.
Saves go to a temp file that replaces the old one, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from usearch.index import Index

from pixdex.daemon.config import IndexSettings
from pixdex.indexer.files import atomic_write

log = logging.getLogger(__name__)

METRIC = "cos"
EXACT_LIMIT = 50_000  # filtered searches over at most this many candidates are exact


class VectorIndex:
    def __init__(self, directory: Path, model_id: str, ndim: int, settings: IndexSettings,
                 read_only: bool = False) -> None:
        """`read_only` memory-maps the file (usearch's view) instead of loading it; such an index never saves."""
        directory.mkdir(parents=True, exist_ok=True)
        self.file = directory / "vectors.usearch"
        self.manifest_file = directory / "vectors.json"
        self.manifest = {"model": model_id, "ndim": ndim, "metric": METRIC, "dtype": settings.dtype}
        self.settings = settings
        self.read_only = read_only
        self.reset_reason: str | None = None
        self.index = self._open()
        self.dirty = self.reset_reason is not None  # a reset index must reach disk with its new manifest

    def _new(self) -> Index:
        return Index(ndim=self.manifest["ndim"], metric=METRIC, dtype=self.settings.dtype,
                     connectivity=self.settings.connectivity, expansion_search=self.settings.expansion_search)

    def _open(self) -> Index:
        index = self._new()
        if not self.file.exists():
            self.reset_reason = f"no vector index at {self.file} yet: embedding"
            return index
        try:
            stored = json.loads(self.manifest_file.read_text())
        except (OSError, ValueError):
            stored = None
        if stored != self.manifest:
            self.reset_reason = f"vector index was built for {stored}, now {self.manifest}: re-embedding"
            log.warning("%s", self.reset_reason)
            return index
        try:
            if self.read_only:
                index.view(str(self.file))
            else:
                index.load(str(self.file))
        except Exception as exc:  # usearch raises plain RuntimeError/ValueError on a bad file
            self.reset_reason = f"vector index {self.file} is unreadable ({exc}): re-embedding"
            log.warning("%s", self.reset_reason)
            return self._new()
        return index

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: int) -> bool:
        return bool(self.index.contains(key))

    def add(self, ids: list[int], vectors: NDArray[np.float32]) -> None:
        self.remove(ids)
        if ids:
            self.index.add(np.array(ids, dtype=np.uint64), vectors)
            self.dirty = True

    def remove(self, ids: Iterable[int]) -> None:
        present = [i for i in ids if self.index.contains(i)]
        if present:
            self.index.remove(np.array(present, dtype=np.uint64))
            self.dirty = True

    def get(self, ids: list[int]) -> NDArray[np.float32]:
        """The stored vectors of `ids` (all must be present), as float32 rows."""
        vectors: Any = self.index.get(np.array(ids, dtype=np.uint64))
        return np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)

    def search(self, query: NDArray[np.float32], count: int, allowed: set[int] | None = None,
               ) -> list[tuple[int, float]]:
        """The `count` nearest ids with cosine similarity, restricted to `allowed` when given."""
        if len(self.index) == 0 or count <= 0:
            return []
        if allowed is not None:
            allowed = {i for i in allowed if self.index.contains(i)}
            if len(allowed) <= EXACT_LIMIT:
                return self._exact(query, count, sorted(allowed))
        fetch = count
        while True:
            matches = self.index.search(query, min(fetch, len(self.index)))
            hits = [(int(k), 1.0 - float(d)) for k, d in zip(matches.keys, matches.distances, strict=True)]
            if allowed is not None:
                hits = [h for h in hits if h[0] in allowed]
            if len(hits) >= count or fetch >= len(self.index):
                return hits[:count]
            fetch *= 4

    def _exact(self, query: NDArray[np.float32], count: int, ids: list[int]) -> list[tuple[int, float]]:
        if not ids:
            return []
        scores = self.get(ids) @ query.astype(np.float32)
        order = np.argsort(-scores, kind="stable")[:count]
        return [(ids[i], float(scores[i])) for i in order]

    def save(self) -> None:
        """Write the index if it changed since it was opened or last saved (a full rewrite: seconds at 1M)."""
        if not self.dirty:
            return
        if self.read_only:
            raise RuntimeError(f"{self.file} was opened read-only")
        temp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        try:
            self.index.save(str(temp))
            os.replace(temp, self.file)
        finally:
            temp.unlink(missing_ok=True)
        atomic_write(self.manifest_file, json.dumps(self.manifest).encode())
        self.dirty = False

