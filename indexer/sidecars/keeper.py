"""The indexing process's side of sidecars: it hands the sidecar jobs to the decode pool (`tasks`), remembers the
sidecar versions pixdex wrote itself — so the scanner does not take them for a person's edit — and holds the lock
that orders writes and moves.

The pipeline's sidecar stage merges each image's results (`merging`, `merge`, `merged`, `settle`); the scanner
carries the sidecars of moved images (`carry`) and removes those of deleted ones (`drop`); the describer writes
its results (`describe`); a person's edit goes through `io`, `spec` and `remember` too.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from pebble import ProcessExpired

from pixdex.indexer import faults
from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import FileStat, ImageRow
from pixdex.indexer.inference import ModelInfo
from pixdex.indexer.paths import display_path
from pixdex.indexer.pools import Pool, exit_reason
from pixdex.indexer.sections import SidecarSettings
from pixdex.indexer.sidecars.state import SidecarState, sidecar_version
from pixdex.indexer.sidecars.tasks import (
    Embedding,
    Move,
    SidecarSpec,
    Whereabouts,
    carry_sidecar,
    describe_sidecar,
    drop_sidecar,
    ocr_sidecar,
    sync_sidecar,
)

log = logging.getLogger(__name__)

REMEMBERED = 10_000  # own writes remembered, newest kept: the writer records them with the commit soon after
TIMEOUT = 60.0  # seconds a sidecar job may take before it is killed


class SidecarKeeper:
    def __init__(self, pool: Pool, settings: SidecarSettings, info: ModelInfo, catalog: Path) -> None:
        self._pool = pool
        self._settings = settings
        self._info = info
        self._catalog = catalog
        self._lock = threading.Lock()
        # The sidecar versions pixdex itself just wrote, by image path: the scanner does not take them for
        # a person's edit (the writer records them with the commit; this covers the moments before).
        self._own: OrderedDict[bytes, str | None] = OrderedDict()
        self._writing: set[bytes] = set()  # image paths whose sidecar a worker is merging right now
        self._own_images: dict[bytes, tuple[int, int]] = {}  # images whose XMP pixdex wrote: (size, mtime) after
        # Held while a sidecar is written for a path (the sidecar stage, the scanner carrying sidecars of moved
        # images, a person's edit): a move the scanner carries over is never overtaken by a write to the old path.
        self.io = threading.Lock()

    def spec(self, made_by_models: bool = True, embedded: bool = False) -> SidecarSpec:
        """Write pixdex's keywords only with what models made: in reduced mode, and for content whose row has
        no model results, sidecars are only read (what models wrote before is never taken back). `embedded`:
        the image's own XMP too, when `[sidecar] embedded` asks for it (the pipeline's merges only)."""
        settings, info = self._settings, self._info
        return SidecarSpec(settings.write and made_by_models and info.has_models, settings.tag_parent,
                           settings.naming, info.tagger_id or info.clip_id, settings.embedded and embedded)

    def remember(self, path: bytes, side: SidecarState) -> None:
        """`side` is the version pixdex wrote of the sidecar of the image at `path` (and of the image's own XMP)."""
        with self._lock:
            if side.image_stat is not None:
                self._own_images[path] = side.image_stat[2:]
                while len(self._own_images) > REMEMBERED:
                    self._own_images.pop(next(iter(self._own_images)))
            self._own[path] = side.signature
            self._own.move_to_end(path)
            while len(self._own) > REMEMBERED:
                self._own.popitem(last=False)

    def own_view(self) -> tuple[dict[bytes, str | None], set[bytes], dict[bytes, tuple[int, int]]]:
        """For the scanner: the sidecar versions pixdex wrote (by image path), the images whose sidecar a worker
        is merging right now (it reads what is there), and the images whose own XMP pixdex rewrote."""
        with self._lock:
            return dict(self._own), set(self._writing), dict(self._own_images)

    # The pipeline's sidecar stage (under `io`)
    def merging(self, paths: Iterable[bytes]) -> None:
        """Workers are about to merge into the sidecars of these images (until `merged`)."""
        with self._lock:
            self._writing.update(paths)

    def merge(self, path: bytes, tags: list[str], rejected: list[str], spec: SidecarSpec,
              embedding: Embedding | None, image_id: int, where: Whereabouts | None = None) -> Future[SidecarState]:
        return self._pool.schedule(sync_sidecar, (path, tags, rejected, spec, embedding, image_id, where),
                                   timeout=TIMEOUT)

    def merged(self, path: bytes) -> None:
        with self._lock:
            self._writing.discard(path)

    def settle(self, path: bytes, side: SidecarState) -> bool:
        """After pixdex wrote the sidecar of the image at `path`: remember the version it wrote — unless another
        program wrote it after pixdex did (its event was not taken for a change while pixdex was writing); then
        False: it is to be read again."""
        if side.path is not None and sidecar_version(side.path) != side.signature:
            return False
        self.remember(path, side)
        return True

    # The scanner's
    def carry(self, moved: list[tuple[ImageRow, FileStat]]) -> list[tuple[bytes, SidecarState]]:
        """Move each moved image's sidecar along, merging pixdex's keywords as the catalog holds them now; returns
        each new path's sidecar state. Under `io`: a write to an old path in flight lands before its sidecar is
        carried. An image still queued (perhaps in flight, its results not committed yet) only has its sidecar
        moved: its entry is done again at the new path (`Writer.register`), which merges what it finds then."""
        spec = self.spec()
        with self.io:
            moves = self._moves(moved) if moved else []
            futures = [self._pool.schedule(carry_sidecar, (move, spec), timeout=TIMEOUT) for move in moves]
            carried = [(move.new, outcome(future, move.new)) for move, future in zip(moves, futures, strict=True)]
        for path, side in carried:
            self.remember(path, side)
        return carried

    def _moves(self, moved: list[tuple[ImageRow, FileStat]]) -> list[Move]:
        reader = Catalog(self._catalog, read_only=True)
        try:
            rows = reader.get_many([row.id for row, _ in moved])
            busy = reader.queued_among(list(rows))
            vectors = dict(reader.embeddings(self._info.clip_id, ids=list(rows))) \
                if self._info.has_models and self._settings.embedding else {}
        finally:
            reader.close()
        moves = []
        for row, st in moved:
            now = rows.get(row.id)
            if now is None or now.state != "done":
                continue
            vector = vectors.get(row.id) if now.clip_model == self._info.clip_id and now.hash else None
            embedding = (self._info.clip_id, now.hash, vector) if vector is not None and now.hash else None
            moves.append(Move(now.path, st.path, [str(t["name"]) for t in now.machine_tags], now.rejected_list,
                              merge=row.id not in busy, image_id=row.id, embedding=embedding))
        return moves

    def drop(self, images: list[bytes]) -> None:
        """Remove the sidecars of these deleted images where pixdex alone wrote them (`moves.only_ours`)."""
        spec = self.spec()
        faults.hold("drop", images)
        for future in [self._pool.schedule(drop_sidecar, (path, spec), timeout=TIMEOUT) for path in images]:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - any failure leaves a sidecar behind, which is harmless
                log.debug("sidecar of a deleted image not removed: %s", exc)

    # The describer's and the OCR stage's
    def describe(self, path: bytes, machine: list[str], rejected: list[str], description: str,
                 text: str) -> Future[SidecarState]:
        """A description's results into the image's sidecar, in the decode pool; remembered as pixdex's own."""
        return self._remembered(path, self._pool.schedule(
            describe_sidecar, (path, machine, rejected, self.spec(), description, text), timeout=TIMEOUT))

    def ocr(self, path: bytes, text: str, read_by: tuple[str, str]) -> Future[SidecarState]:
        """The OCR model's reading (by `read_by`: the reader, the content hash read) into the image's sidecar, in
        the decode pool; remembered as pixdex's own."""
        return self._remembered(path, self._pool.schedule(ocr_sidecar, (path, text, self.spec(), read_by),
                                                          timeout=TIMEOUT))

    def _remembered(self, path: bytes, future: Future[SidecarState]) -> Future[SidecarState]:
        def written(done: Future[SidecarState]) -> None:
            if done.exception() is None:
                self.remember(path, done.result())

        future.add_done_callback(written)
        return future


def outcome(future: Future[SidecarState], path: bytes) -> SidecarState:
    """A sidecar job's result; a worker that died or ran out of time is the sidecar's failure, never the run's."""
    try:
        return future.result()
    except ProcessExpired as exc:
        return SidecarState(error=f"the sidecar process died on this file ({exit_reason(exc.exitcode)})")
    except FutureTimeout:
        return SidecarState(error=f"writing the sidecar took longer than {TIMEOUT:g} s")
    except Exception as exc:  # noqa: BLE001 - a hostile sidecar must never stop the run
        log.warning("unexpected error with the sidecar of %s: %r", display_path(path), exc)
        return SidecarState(error=f"unexpected {type(exc).__name__}: {exc}")
