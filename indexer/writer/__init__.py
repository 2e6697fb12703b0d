"""The single writer: one thread that owns every mutation of the catalog, the text and the vector index.

Callers submit commands (`register`, `store`, `fail`, `touch`, `enqueue`, …) and get a future, as
datasette's write thread hands out. The thread gathers commands and commits them together when
`commit_items` changed or `commit_seconds` passed since the first one — a short transaction that
only runs SQL, never held open while anything else (decoding, inference) happens.

A commit bumps the catalog's generation and stamps every row it touched. Only after the catalog
committed are the two indexes brought up to that generation, from what the catalog now says
(`changed_since`): tantivy documents are rebuilt from rows, vectors from stored embeddings. So a
failed commit is rolled back in SQLite and nothing else ever saw it, and an index that missed a
commit (crash, error) catches up at the next one or at open. Then the generation is published.
A command that fails inside a group is retried alone, so only it fails.

The commands themselves are in `commands`; the live model's decisions in `live`; the text index's catch-up
in `catch_up`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.fulltext import FullText
from pixdex.indexer.sections import PipelineSettings
from pixdex.indexer.vectors import VectorIndex
from pixdex.indexer.writer.catch_up import sync_text
from pixdex.indexer.writer.commands import Command, Commands
from pixdex.indexer.writer.live import adopt_old_vectors, adopt_sidecars, promote_when_complete, settle_live

log = logging.getLogger(__name__)


class Writer(Commands):
    def __init__(self, catalog: Catalog, fulltext: FullText, vectors: VectorIndex | None, settings: PipelineSettings,
                 models: tuple[str, str | None],
                 open_vectors: Callable[[str, int], VectorIndex] | None = None,
                 ids: Mapping[bytes, int] | None = None) -> None:
        """`open_vectors(model, dim)`: without models (reduced mode), the vector index for embeddings taken from
        sidecars, opened when the first one arrives. `ids`: the id a new file at a path takes if it is free."""
        self._ids = ids or {}
        self.catalog = catalog
        self.fulltext = fulltext
        self.vectors = vectors
        self._open_vectors = open_vectors
        self.settings = settings
        self.models = models
        self.commits = 0
        self._commands: queue.Queue[tuple[Command | None, Future[Any]]] = queue.Queue()
        self._published = threading.Condition()
        self.after_commit: Callable[[], None] | None = None  # told after every commit (the feed wakes on it)
        self.generation = catalog.generation()
        adopt_old_vectors(catalog, vectors, models[0])
        adopt_sidecars(catalog, models)
        self.live = settle_live(catalog, vectors, models[0])
        self._catch_up()
        self._thread = threading.Thread(target=self._run, name="pixdex-writer", daemon=True)
        self._thread.start()

    def submit(self, command: Command) -> Future[Any]:
        future: Future[Any] = Future()
        if not self._thread.is_alive():
            future.set_exception(RuntimeError("the writer is closed"))
            return future
        self._commands.put((command, future))
        return future

    def flush(self) -> int:
        """Commit everything submitted so far; returns the generation that holds it."""
        future: Future[Any] = Future()
        self._commands.put((None, future))
        return int(future.result())

    def commit_soon(self) -> None:
        """Commit what is pending now instead of after `commit_seconds`, without waiting for it: nothing else
        is on its way (the pipeline drained), so waiting would only delay it."""
        self._commands.put((None, Future()))

    def close(self) -> None:
        """Commit what is pending, save the vector index, stop the thread."""
        if self._thread.is_alive():
            self.flush()
            self._commands.put((_STOP, Future()))
            self._thread.join()
        if self.vectors is not None:
            self.vectors.save()

    def wait_for(self, generation: int, timeout: float | None = None) -> bool:
        with self._published:
            return self._published.wait_for(lambda: self.generation >= generation, timeout)

    def _run(self) -> None:
        group: list[tuple[Command, Future[Any]]] = []
        first = 0.0
        while True:
            timeout = None
            if group:
                timeout = max(0.0, first + self.settings.commit_seconds - time.monotonic())
            elif self.vectors is not None and self.vectors.unsaved:  # wake up when the vector file is due for a save
                timeout = max(0.0, self.vectors.last_save + self.vectors.settings.save_seconds - time.monotonic())
            command: Command | None
            future: Future[Any] | None
            try:
                command, future = self._commands.get(timeout=timeout)
            except queue.Empty:  # a commit or a save of the vector file is due
                command, future = None, None
            if command is _STOP:
                return
            if command is not None and future is not None:
                if not group:
                    first = time.monotonic()
                group.append((command, future))
            flush_asked = future if command is None else None  # `flush`: its future learns the generation
            if group and (flush_asked or len(group) >= self.settings.commit_items
                          or time.monotonic() - first >= self.settings.commit_seconds):
                try:
                    self._commit(group)
                except Exception as exc:  # the thread must outlive any one commit
                    log.exception("commit failed")
                    for _, waiting in group:
                        if not waiting.done():
                            waiting.set_exception(exc)
                group = []
            if flush_asked is not None:
                flush_asked.set_result(self.generation)
            if self.vectors is not None and self.vectors.due():
                self._save_vectors()

    def _commit(self, group: list[tuple[Command, Future[Any]]]) -> None:
        try:
            results = self._transaction([c for c, _ in group])
        except Exception as exc:  # noqa: BLE001 - the group failed: each command is retried alone below
            if len(group) > 1:
                for one in group:
                    self._commit([one])
                return
            log.error("commit failed: %s", exc)
            group[0][1].set_exception(exc)
            return
        self._catch_up()
        for (_, future), result in zip(group, results, strict=True):
            future.set_result(result)
        self.catalog.trim_wal()  # after the answers: a checkpoint delays no one waiting for the commit
        if self.after_commit is not None:
            self.after_commit()

    def _transaction(self, commands: list[Command]) -> list[Any]:
        db = self.catalog.db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            gen = self.catalog.generation() + 1
            results = [command(self.catalog, gen) for command in commands]
            if db.total_changes == before:  # nothing changed: no new generation, nothing to catch up
                db.execute("ROLLBACK")
                return results
            self.catalog.set_generation(gen)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.commits += 1
        return results

    def _catch_up(self) -> None:
        """Bring both indexes to the catalog's generation, then publish it."""
        generation = self.catalog.generation()
        try:
            if self.fulltext.generation != generation:
                sync_text(self.catalog, self.fulltext)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the text index catches up at the next commit
            log.error("text index commit failed (it catches up later): %s", exc)
            self.fulltext.rollback()
        vectors = self.vectors
        try:
            if vectors is not None:
                vectors.top_up(self.catalog)
                if vectors.building and self.live is not None:
                    self.live = promote_when_complete(self.catalog, vectors, self.live, self.models[0])
        except Exception:  # rebuilt from the catalog's embeddings at the next commit
            log.exception("vector index update failed; rebuilding it from the catalog")
            if vectors is not None:
                vectors.generation = 0
        with self._published:
            self.generation = generation
            self._published.notify_all()

    def _save_vectors(self) -> None:
        assert self.vectors is not None
        try:
            self.vectors.save()
        except OSError as exc:
            log.error("cannot save the vector index (kept in memory, retried later): %s", exc)
            return
        upto = min(self.fulltext.generation, self.vectors.saved_generation)
        with self.catalog.transaction():
            self.catalog.forget_tombstones(upto)


_STOP: Command = lambda catalog, gen: None  # noqa: E731 - a sentinel that is never run
