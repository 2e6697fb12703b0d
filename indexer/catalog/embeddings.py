"""The embeddings table and the live CLIP model: which model's vectors searches use, and the switch to a new one.

The catalog holds every embedding (the vector index is a cache of them), keyed by image and model: while a
newly configured model re-embeds the library its vectors sit beside the live model's, and the writer makes it
live once no image has a live vector without a new one (`has_old_vectors`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pixdex.indexer.catalog.queries import in_chunks
from pixdex.indexer.catalog.rows import BLOB_BYTES, blob_vector, vector_blob

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class Embeddings:
    """Stored vectors and the live model (mixed into `Catalog`); the writes are the writer's only."""

    db: sqlite3.Connection

    def embeddings(self, model: str, ids: Iterable[int] | None = None,
                   since: int | None = None) -> Iterator[tuple[int, NDArray[np.float32]]]:
        """(id, vector) of done rows embedded by `model`: all, those in `ids`, or those stamped after `since`."""
        sql = ("SELECT e.image_id, e.vector FROM embeddings e JOIN images i ON i.id = e.image_id "
               "WHERE e.model = ? AND i.state = 'done'")
        if since is not None:
            yield from ((int(i), blob_vector(v)) for i, v in self.db.execute(sql + " AND i.gen > ?", (model, since)))
            return
        if ids is None:
            yield from ((int(i), blob_vector(v)) for i, v in self.db.execute(sql, (model,)))
            return
        for chunk, marks in in_chunks(ids):
            yield from ((int(i), blob_vector(v))
                        for i, v in self.db.execute(sql + f" AND e.image_id IN ({marks})", (model, *chunk)))

    def embedding_dim(self, model: str) -> int | None:
        """The dimension of `model`'s stored embeddings (None: it has none)."""
        found = self.db.execute("SELECT length(vector) FROM embeddings WHERE model = ? LIMIT 1", (model,)).fetchone()
        return int(found[0]) // BLOB_BYTES if found else None

    def live_model(self) -> str | None:
        """The CLIP model whose vectors searches use (None before any model embedded anything)."""
        found = self.db.execute("SELECT model FROM live WHERE what = 'clip'").fetchone()
        return str(found[0]) if found else None

    def switching_from(self, new: str) -> str | None:
        """The live model `new` is replacing, while there is one with vectors to keep; else None (nothing
        live yet, `new` itself, or a live model that embedded nothing: `new` simply becomes live)."""
        live = self.live_model()
        if live is None or live == new or self.db.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM embeddings WHERE model = ?)", (live,)).fetchone()[0]:
            return None
        return live

    def old_vectors_left(self, live: str, name: str) -> int:
        """Images with a vector by `live` but none yet by the model in folder `name` (whatever its files'
        fingerprint: status loads no model)."""
        pattern = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "@%"
        return int(self.db.execute(
            "SELECT count(*) FROM embeddings e JOIN images i ON i.id = e.image_id WHERE e.model = ? "
            "AND i.state = 'done' AND (i.clip_model IS NULL OR i.clip_model NOT LIKE ? ESCAPE '\\')",
            (live, pattern)).fetchone()[0])

    def has_old_vectors(self, live: str, new: str) -> bool:
        """Whether an image still has a vector by `live` and none by `new` (stops at the first one: it runs
        once per commit while re-embedding). While it does, `live` stays live."""
        found: int = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM embeddings e JOIN images i ON i.id = e.image_id WHERE e.model = ? "
            "AND i.state = 'done' AND (i.clip_model IS NULL OR i.clip_model != ?))", (live, new)).fetchone()[0]
        return found == 1

    def missing_embeddings(self, model: str) -> list[int]:
        """Done rows with no embedding by `model` (catalogs from before embeddings were stored)."""
        return [int(i) for (i,) in self.db.execute(
            "SELECT id FROM images WHERE state = 'done' AND id NOT IN "
            "(SELECT image_id FROM embeddings WHERE model = ?)", (model,))]

    def set_live(self, model: str) -> None:
        """`model` becomes the one searches use; every other model's vectors go."""
        self.db.execute("INSERT INTO live VALUES ('clip', ?, ?) ON CONFLICT (what) DO UPDATE SET "
                        "model = excluded.model, since = excluded.since", (model, time.time()))
        self.db.execute("DELETE FROM embeddings WHERE model != ?", (model,))

    def drop_embeddings_except(self, keep: Iterable[str]) -> int:
        """Vectors of models that are neither live nor being built (a switch given up, say)."""
        keep = list(keep)
        marks = ",".join("?" * len(keep))
        return self.db.execute(f"DELETE FROM embeddings WHERE model NOT IN ({marks})", keep).rowcount

    def put_embedding(self, image_id: int, model: str, embedding: NDArray[np.float32]) -> None:
        self.db.execute("INSERT OR REPLACE INTO embeddings (image_id, model, vector) VALUES (?, ?, ?)",
                        (image_id, model, vector_blob(embedding)))
