"""The single writer: every mutation of the catalog, the vector index and the text index.

Changes collect in an open SQLite transaction, the tantivy writer and the in-memory usearch
index; `commit` persists them in the order text index → vectors → catalog. A crash before the
catalog commit leaves those rows pending, and redoing them is idempotent (update = delete + add),
so the three stores never disagree about what is done. New rows are committed as pending before
any of their data reaches an index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

from pixdex.daemon.config import IndexSettings
from pixdex.indexer.catalog import Catalog, FileStat, ImageRow
from pixdex.indexer.errors import display_path
from pixdex.indexer.fulltext import FullText, TextDoc
from pixdex.indexer.vectors import VectorIndex

log = logging.getLogger(__name__)


@dataclass
class Indexed:
    """Everything the pipeline learnt about one image."""

    image_id: int
    stat: FileStat
    digest: str
    width: int
    height: int
    taken: datetime | None
    camera: str | None
    tags: list[dict[str, object]]
    embedding: NDArray[np.float32]
    metadata: str = ""
    sidecar_error: str | None = None


@dataclass
class Stores:
    catalog: Catalog
    vectors: VectorIndex
    fulltext: FullText


@dataclass
class Writer:
    stores: Stores
    clip_model: str
    tagger_model: str | None
    _open: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        reason = self.stores.vectors.reset_reason
        if reason and self.stores.catalog.counts()["done"]:
            with self.stores.catalog.transaction():
                self.stores.catalog.mark_all_pending(reason)

    def _begin(self) -> None:
        if not self._open:
            self.stores.catalog.db.execute("BEGIN IMMEDIATE")
            self._open = True

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        elif self._open:
            self.stores.catalog.db.execute("ROLLBACK")
            self._open = False

    def add_pending(self, st: FileStat, digest: str | None = None) -> int:
        self._begin()
        return self.stores.catalog.insert(st, digest)

    def mark_changed(self, row: ImageRow, st: FileStat) -> None:
        self._begin()
        self.stores.catalog.update_file(row.id, st, row.hash)

    def touch(self, image_id: int, st: FileStat, digest: str) -> None:
        """A file whose mtime changed but whose content did not: only the catalog learns the new stat."""
        self._begin()
        self.stores.catalog.update_file(image_id, st, digest)

    def move(self, row: ImageRow, st: FileStat) -> None:
        """A file that moved with unchanged content: new path, same id, no inference."""
        self._begin()
        self.stores.catalog.update_file(row.id, st, row.hash)
        if row.state == "done":
            self.stores.fulltext.upsert([text_doc_of_row(replace(row, path=st.path, mtime_ns=st.mtime_ns))])

    def remove(self, rows: list[ImageRow]) -> None:
        self._begin()
        ids = [r.id for r in rows]
        self.stores.catalog.delete(ids)
        self.stores.vectors.remove(ids)
        self.stores.fulltext.remove(ids)

    def store(self, items: list[Indexed]) -> None:
        if not items:
            return
        self._begin()
        self.stores.vectors.add([i.image_id for i in items], np.stack([i.embedding for i in items]))
        self.stores.fulltext.upsert([text_doc(i) for i in items])
        for item in items:
            self.stores.catalog.update_file(item.image_id, item.stat, item.digest)
            self.stores.catalog.mark_done(
                item.image_id, clip_model=self.clip_model, tagger_model=self.tagger_model,
                width=item.width, height=item.height,
                taken=item.taken.isoformat() if item.taken else None, camera=item.camera, tags=item.tags,
                metadata=item.metadata, sidecar_error=item.sidecar_error)

    def fail(self, image_id: int, stat: FileStat, reason: str) -> None:
        self._begin()
        self.stores.catalog.update_file(image_id, stat, None)
        self.stores.catalog.mark_failed(image_id, reason)
        self.stores.vectors.remove([image_id])
        self.stores.fulltext.remove([image_id])

    def commit(self) -> None:
        self.stores.fulltext.commit()
        self.stores.vectors.save()
        if self._open:
            self.stores.catalog.db.execute("COMMIT")
            self._open = False


def text_doc(item: Indexed) -> TextDoc:
    return TextDoc(id=item.image_id, path=display_path(item.stat.path),
                   tags=[str(t["name"]) for t in item.tags], metadata=item.metadata,
                   camera=item.camera or "", date=item.taken or _mtime(item.stat.mtime_ns))


def text_doc_of_row(row: ImageRow) -> TextDoc:
    taken = datetime.fromisoformat(row.taken) if row.taken else None
    return TextDoc(id=row.id, path=display_path(row.path), tags=[str(t["name"]) for t in row.tag_list],
                   metadata=row.metadata, camera=row.camera or "", date=taken or _mtime(row.mtime_ns))


def _mtime(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1e9)


def open_stores(data_dir: Path, clip_id: str, dim: int, index_settings: IndexSettings,
                read_only: bool = False) -> Stores:
    return Stores(Catalog(data_dir / "catalog.sqlite3"),
                  VectorIndex(data_dir / "vectors", clip_id, dim, index_settings, read_only),
                  FullText(data_dir / "fulltext"))
