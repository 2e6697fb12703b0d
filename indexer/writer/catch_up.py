"""Bringing the text index up to the catalog: the documents of every row the catalog changed after the index's
generation are rebuilt from the rows (the vector index tops itself up the same way: `VectorIndex.top_up`)."""

from __future__ import annotations

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.fulltext import FullText, doc_of_row


def sync_text(catalog: Catalog, fulltext: FullText) -> None:
    """Rebuild the text documents of everything the catalog changed after the index's generation."""
    generation = catalog.generation()
    if fulltext.generation > generation:  # an index newer than its catalog (restored from a backup)
        fulltext.clear()
        fulltext.generation = 0
    rows, gone = catalog.changed_since(fulltext.generation)
    # A row that was never done (a file just registered) has no document to remove.
    removed = [*gone, *(r.id for r in rows if r.state != "done" and (r.state == "failed" or r.hash is not None))]
    docs = [doc_of_row(r) for r in rows if r.state == "done"]
    if not removed and not docs and fulltext.generation:
        fulltext.generation = generation  # nothing changes in tantivy; a restart replays these rows for free
        return
    fulltext.remove(removed)
    fulltext.upsert(docs)
    fulltext.commit(generation)
