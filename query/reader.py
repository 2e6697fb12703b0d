"""A reader of one data directory, safe to keep open for days beside the writer (in this process or
another) and to share between threads.

- the catalog: one read-only SQLite connection per thread;
- the text side: one tantivy searcher per query, the index reloaded when its manifest's generation
  moved since the last query;
- the vector side: a `VectorView` — the saved usearch file memory-mapped, plus the embeddings the
  catalog committed after the file's generation — caught up at each query's generation.

A reader of a data directory where nothing was indexed yet creates nothing: it answers empty.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import tantivy

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.fulltext import _schema, open_for_reading
from pixdex.indexer.layout import Layout
from pixdex.indexer.sections import IndexSettings
from pixdex.indexer.vectors import VectorView


@dataclass(frozen=True)
class TextSnapshot:
    """What one query searches on the text side."""

    index: tantivy.Index
    searcher: tantivy.Searcher
    schema: tantivy.Schema


class Reader:
    def __init__(self, layout: Layout, settings: IndexSettings) -> None:
        self.layout = layout
        self.settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._vector_lock = threading.Lock()
        self._text: tantivy.Index | None = None
        self._text_generation: tuple[int, int] = (-1, -1)
        self._views: dict[tuple[str, int], VectorView] = {}
        self._schema = _schema()

    def exists(self) -> bool:
        return self.layout.exists()

    def catalog(self) -> Catalog:
        """This thread's read-only connection (opened on first use)."""
        catalog: Catalog | None = getattr(self._local, "catalog", None)
        if catalog is None:
            catalog = Catalog(self.layout.catalog, read_only=True)
            self._local.catalog = catalog
        return catalog

    def generation(self) -> int:
        return self.catalog().generation()

    def text(self) -> TextSnapshot | None:
        """A searcher over the text index as of its latest commit (None when there is no usable index).

        Reloads when the index's own manifest moved on: the catalog commits first, so its generation
        can be ahead of what tantivy holds for a moment, and reloading on that would miss the commit.
        """
        generation = self._text_stamp()
        with self._lock:
            if self._text is None or generation != self._text_generation:
                if self._text is None:
                    self._text = open_for_reading(self.layout)
                else:
                    self._text.reload()
                self._text_generation = generation
            if self._text is None:
                return None
            return TextSnapshot(self._text, self._text.searcher(), self._schema)

    def _text_stamp(self) -> tuple[int, int]:
        """The text manifest's identity: it is replaced (new inode) after each tantivy commit."""
        try:
            st = self.layout.fulltext_manifest.stat()
        except OSError:
            return (0, 0)
        return st.st_ino, st.st_mtime_ns

    def vectors(self, model_id: str, ndim: int) -> VectorView:
        """The vectors of `model_id`, caught up with the latest commit. Use under `vector_lock`."""
        view = self._views.get((model_id, ndim))
        if view is None:
            view = self._views[(model_id, ndim)] = VectorView(self.layout, model_id, ndim, self.settings)
        view.refresh(self.catalog(), self.generation())
        return view

    @property
    def vector_lock(self) -> threading.Lock:
        return self._vector_lock

    def close(self) -> None:
        catalog = getattr(self._local, "catalog", None)
        if catalog is not None:
            catalog.close()
            self._local.catalog = None
