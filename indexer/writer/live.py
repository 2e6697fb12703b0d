"""The live CLIP model, decided when the writer opens and as it commits: the model whose vectors searches use.

The first model to embed anything becomes live; a newly configured one re-embeds the library beside it (its
index in ``vectors/next/``) and becomes live in one transaction once no image has a live vector without a new
one (`promote_when_complete`). Catalogs from before embeddings were stored, or before reduced mode took
sidecars' results, are brought up to date once (`adopt_old_vectors`, `adopt_sidecars`).
"""

from __future__ import annotations

import logging

import numpy as np

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import BACKFILL
from pixdex.indexer.vectors import VectorIndex

log = logging.getLogger(__name__)


def adopt_old_vectors(catalog: Catalog, vectors: VectorIndex | None, model: str) -> None:
    """Once per catalog: done rows without a stored embedding (a catalog from before embeddings were
    kept) take theirs from the vector file when it has them, and are queued for embedding otherwise."""
    if vectors is None or catalog.db.execute("SELECT 1 FROM meta WHERE key = 'embeddings_checked'").fetchone():
        return
    missing = catalog.missing_embeddings(model)
    with catalog.transaction():
        for image_id in missing:
            if image_id in vectors:
                vector = np.asarray(vectors.index.get(np.uint64(image_id)), dtype=np.float32)
                catalog.put_embedding(image_id, model, vector.reshape(-1))
            else:
                catalog.enqueue(image_id, BACKFILL, "no stored embedding")
        catalog.db.execute("INSERT INTO meta VALUES ('embeddings_checked', 1)")


def adopt_sidecars(catalog: Catalog, models: tuple[str, str | None]) -> None:
    """Once per catalog, without models: images waiting for them whose sidecar was read are read again, so
    the keywords and embedding it holds from models that ran elsewhere are taken (catalogs from before
    reduced mode took them)."""
    if models[0] or catalog.meta("sidecars_adopted"):
        return
    with catalog.transaction():
        for (image_id,) in catalog.db.execute("SELECT id FROM images WHERE state = 'done' AND clip_model IS NULL "
                                              "AND side IS NOT NULL").fetchall():
            catalog.enqueue(int(image_id), BACKFILL, "keywords and embedding from its sidecar")
        catalog.set_meta("sidecars_adopted", 1)


def settle_live(catalog: Catalog, vectors: VectorIndex | None, new: str) -> str | None:
    """The live CLIP model at open. The first model to embed anything becomes live; vectors of models
    that are neither live nor configured (a switch given up) go. Without models nothing changes."""
    if vectors is None or not new:
        return catalog.live_model()
    live = catalog.switching_from(new)  # the one decision VectorIndex was opened with (`building`)
    with catalog.transaction():
        if live is None:
            catalog.set_live(new)
        else:
            catalog.drop_embeddings_except([live, new])
    if live is None:
        return new
    log.info("re-embedding with %s: searches use %s until %d images have their new vectors", new, live,
             catalog.old_vectors_left(live, new.rsplit("@", 1)[0]))
    return live


def promote_when_complete(catalog: Catalog, vectors: VectorIndex, live: str, new: str) -> str:
    """While `new` re-embeds: once no image has a `live` vector without a new one, it becomes live (and its
    index moves into place). Returns the live model."""
    if catalog.has_old_vectors(live, new):
        return live
    with catalog.transaction():
        catalog.set_live(new)
    vectors.promote()
    log.info("every image has its %s vector: searches use it now (was %s)", new, live)
    return new
