"""The indexing core that runs for as long as its owner wants: `pixdex index` drains it once, the
daemon keeps it open.

`Indexer` takes the data directory's lock, starts the inference worker (which loads the models
and says what the decoders must produce), opens the stores, starts the writer thread, the decode
pool and the pipeline. `scan` diffs folders against the catalog and turns what it finds into
queue entries; `reindex` queues files a person asked for; `drain` waits until the queue is
empty; `close` stops the pipeline, commits what is finished and saves the vector index.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from pixdex.indexer import faults
from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import ASKED
from pixdex.indexer.errors import ModelError, ModelMissing, PixdexError
from pixdex.indexer.fulltext import FullText
from pixdex.indexer.inference import ModelInfo, describe, model_spec
from pixdex.indexer.ocr.gate import ClipGate, GateVector, gate_vector
from pixdex.indexer.ocr.stage import OcrStage
from pixdex.indexer.paths import display_path
from pixdex.indexer.phash_backfill import PhashBackfill
from pixdex.indexer.pipeline import Pipeline
from pixdex.indexer.pools import IdlePool, make_pool, stop_pool
from pixdex.indexer.prepare import prepare_for_llm
from pixdex.indexer.rebuild import finish_swap
from pixdex.indexer.scan.diff import diff_tree
from pixdex.indexer.scan.walk import below_any
from pixdex.indexer.settings import Config
from pixdex.indexer.sidecars.keeper import SidecarKeeper
from pixdex.indexer.stages.stats import Stats
from pixdex.indexer.vectors import VectorIndex
from pixdex.indexer.writer import Writer

log = logging.getLogger(__name__)
Reduced = Literal["never", "if missing", "if unloadable"]  # see `Indexer`


@dataclass
class ScanReport:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    failed_before: int = 0
    queued: int = 0
    resumed: int = 0  # queue entries left by an earlier run
    folder_errors: list[tuple[str, str]] = field(default_factory=list)
    sidecar_errors: list[str] = field(default_factory=list)
    sidecars: int = 0  # images whose sidecar alone changed: re-read, no decode, no model


class Indexer:
    """`reduced` says when models that cannot load leave it in reduced mode (`info.missing` says why), indexing
    names, folders and each file's own metadata while those images wait for models: "never" (the error stops it),
    "if missing" (only models whose files are not there; one that is there but fails to load stops it: the person
    asked for it and must hear why) or "if unloadable" (any model error: the daemon keeps serving)."""

    def __init__(self, config: Config, reduced: Reduced = "never", holder: int | None = None,
                 describe: bool = False, paused: bool = False, vanish_grace: float = 0.0,
                 ids: Mapping[bytes, int] | None = None, backfill: bool = False, read_text: bool = False) -> None:
        """`paused`: start with nothing fed (the daemon's remembered pause); `vanish_grace`: how long a file
        that vanished while queued waits for the scanner to find where it went (the daemon's watcher does);
        `ids`: the id a new file at a path takes, when it is free (a rebuild keeps the old catalog's); `backfill`:
        hash the images indexed before pixdex hashed them in a thread of their own (the daemon's; `drain` does
        it otherwise); `read_text`: run the OCR stage (`[ocr] enabled`), as the daemon does."""
        self.config = config
        self._ids = ids or {}
        self._paused = paused
        self._vanish_grace = vanish_grace
        self.describer: Any = None  # [describe]: only the daemon runs it (`describe`)
        self._describe = describe
        self._backfill = backfill
        self.ocr: Any = None  # [ocr]: the OCR stage, when `read_text`
        self._read_text = read_text and config.ocr.enabled
        self.reduced = reduced
        self.library: list[Path] = list(config.folders)  # every folder indexed: links into them are not followed
        self.layout = config.layout
        self._lock = lock_data_dir(self.layout.root, self.layout.lock, holder)
        self._opened: list[Callable[[], Any]] = [self._lock.close]
        finish_swap(self.layout)  # a rebuild's swap that a crash cut short
        try:
            self._open()
        except BaseException:
            self._close_opened()
            raise

    def _open(self) -> None:
        self.spec = model_spec(self.config)
        # Both pools before any other thread starts: while a pool starts, Ctrl-C is ignored in this process,
        # and a thread of ours not blocking it (the writer's) would take it and lose it (make_pool).
        settings = self.config.pipeline
        self.infer_pool = IdlePool(lambda: make_pool(1, settings), settings.workers_idle)
        self.infer_pool.start()
        self._opened.append(lambda: stop_pool(self.infer_pool))
        self.decode_pool = IdlePool(lambda: make_pool(self.config.decode.workers, settings), settings.workers_idle)
        self.decode_pool.start()
        self._opened.append(lambda: stop_pool(self.decode_pool))
        if self._read_text:  # background work: the lowest CPU priority there is
            self.ocr_pool = make_pool(1, dataclasses.replace(self.config.pipeline, nice=19, idle_cpu=True))
            self._opened.append(lambda: stop_pool(self.ocr_pool))
        self.info = self._describe_models()
        catalog = Catalog(self.layout.catalog)
        self._opened.append(catalog.close)
        fulltext = FullText(self.layout)
        vectors = (VectorIndex(self.layout, self.info.clip_id, self.info.dim, self.config.index,
                               building=catalog.switching_from(self.info.clip_id) is not None)
                   if self.info.has_models else self._live_vectors(catalog))
        self.writer = Writer(catalog, fulltext, vectors, self.config.pipeline, self.info.ids,
                             open_vectors=lambda model, dim: VectorIndex(self.layout, model, dim, self.config.index),
                             ids=self._ids)
        self._opened.append(self.writer.close)
        self.sidecars = SidecarKeeper(self.decode_pool, self.config.sidecar, self.info, self.layout.catalog)
        self.pipeline = Pipeline(self.config, self.info, self.spec, self.writer, self.decode_pool, self.infer_pool,
                                 self.sidecars)
        self.pipeline.parking.grace = self._vanish_grace
        self.pipeline.parking.library = lambda: [os.fsencode(os.path.realpath(p)) for p in self.library]
        if self._paused:
            self.pipeline.paused.set()  # before the feed starts: nothing queued slips through
        self.pipeline.start()
        self._opened.append(self._stop_pipeline)
        self.phashes = PhashBackfill(self.layout.catalog, self.decode_pool, self.writer.submit,
                                     self.config.decode.max_pixels,
                                     busy=lambda: self.pipeline.paused.is_set() or not self.pipeline.idle())
        if self._backfill:
            self.phashes.start()
            self._opened.append(self.phashes.stop)
        if self._describe and self.config.describe.enabled:
            self._start_describer()
        if self._read_text:
            self._start_ocr()
        reader = Catalog(self.layout.catalog, read_only=True)
        try:
            left = reader.sidecar_drops()  # by a crash between a deletion's commit and its sidecars' removal
        finally:
            reader.close()
        if left:
            self.drop_sidecars(left)

    def _live_vectors(self, catalog: Catalog) -> VectorIndex | None:
        """Without models: the live model's index, when its vectors were taken from sidecars."""
        live = catalog.live_model()
        dim = catalog.embedding_dim(live) if live else None
        return VectorIndex(self.layout, live, dim, self.config.index) if live and dim else None

    def _start_describer(self) -> None:
        from pixdex.indexer.describe import Describer  # late: ollama (httpx, pydantic) loads only with [describe] on

        settings, pool = self.config.describe, self.decode_pool
        self.describer = Describer(
            settings, self.layout.catalog,
            prepare=lambda path: pool.schedule(
                prepare_for_llm, (path, settings.max_side, self.config.decode.max_pixels,
                                  self.config.decode.max_megabytes << 20), timeout=120),
            write=self.sidecars.describe, record=self.writer.described, paused=self.pipeline.paused.is_set,
            listener=lambda kind, data: self.pipeline.listener and self.pipeline.listener(kind, data),
            environ=self.config.environ)
        self.describer.start()
        self._opened.append(self.describer.stop)

    def _start_ocr(self) -> None:
        self.ocr = OcrStage(self.config.ocr, self.config.decode.max_pixels, self.layout.catalog, self.ocr_pool,
                            write=self.sidecars.ocr, record=self.writer.text_read,
                            busy=lambda: not self.pipeline.idle(), paused=self.pipeline.paused.is_set,
                            listener=self._tell, gate=self._ocr_gate())
        self.ocr.start()
        self._opened.append(self.ocr.stop)

    def _ocr_gate(self) -> tuple[ClipGate, str] | None:
        """`[ocr] clip_gate`, when set and the CLIP model is real (a stand-in's similarities mean nothing)."""
        threshold = self.config.ocr.clip_gate
        if not threshold or not self.info.has_models:
            return None
        found: GateVector = self.infer_pool.schedule(gate_vector, (self.spec,)).result()
        if found.standin:
            log.warning("[ocr] clip_gate is off: the CLIP model %s is a stand-in (its similarities mean nothing)",
                        found.clip_id)
            return None
        return ClipGate(found.vector, threshold), found.clip_id

    def _tell(self, kind: str, data: dict[str, Any]) -> None:
        if self.pipeline.listener is not None:
            self.pipeline.listener(kind, data)

    def _describe_models(self) -> ModelInfo:
        from pebble import ProcessExpired

        try:
            try:
                info: ModelInfo = self.infer_pool.schedule(describe, (self.spec,)).result()
            except ProcessExpired as exc:  # ONNX Runtime crashed loading a graph: a model problem, not a file's
                raise ModelError(f"{self.spec.clip_dir}: the model worker died loading the models (exit code "
                                 f"{exc.exitcode}); a half-precision (fp16) export needs [models] optimization = "
                                 "\"extended\", other graphs may need another onnxruntime") from None
            return info
        except ModelError as exc:
            if self.reduced == "never" or (self.reduced == "if missing" and not isinstance(exc, ModelMissing)):
                raise
            return ModelInfo.reduced(str(exc))

    def _stop_pipeline(self) -> None:
        """Stop feeding, stop the workers (what they hold stays queued), then let the stages finish."""
        self.pipeline.request_stop()
        stop_pool(self.decode_pool)
        stop_pool(self.infer_pool)
        self.pipeline.stop()

    def __enter__(self) -> Indexer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def stats(self) -> Stats:
        return self.pipeline.stats

    def scan(self, roots: list[Path] | list[bytes], shallow: list[bytes] = ()) -> ScanReport:  # type: ignore[assignment]
        """Diff `roots` against the catalog and queue what changed; returns what was found. The watcher
        passes the folders it saw change (`shallow` ones without their subfolders)."""
        reader = Catalog(self.layout.catalog, read_only=True)
        try:
            resumed = sum(reader.queue_counts().values())
            own, writing, own_images = self.sidecars.own_view()
            diff = diff_tree(reader, [os.fsencode(r) for r in roots], self.config.library.skip_dirs,
                             self.config.library.follow_symlinks, self.info.ids,
                             [os.fsencode(f) for f in self.library], shallow, self.config.library.exclude, own,
                             writing, own_images, self.config.sidecar.write and self.info.has_models)
        finally:
            reader.close()
        faults.hold("register", [st.path for _, st in diff.moved])
        report = ScanReport(new=len(diff.new), changed=len(diff.changed), unchanged=len(diff.unchanged),
                            moved=len(diff.moved), removed=len(diff.removed), failed_before=len(diff.failed),
                            queued=len(diff.new) + len(diff.changed) + len(diff.stale) + len(diff.sidecar),
                            resumed=resumed, folder_errors=[(display_path(p), reason) for p, reason in diff.errors],
                            sidecars=len(diff.sidecar))
        # A moved image's sidecar follows it before the move commits: after a crash the move is found
        # again and the carry-over (which never overwrites) is redone.
        carried = self.sidecars.carry(diff.moved)
        for new_path, side in carried:
            if side.error:
                report.sidecar_errors.append(f"{display_path(new_path)}: {side.error}")
        drops = bool(diff.removed) and self.config.sidecar.write
        registered = self.writer.register(diff.new, diff.changed, diff.stale, diff.moved, diff.removed, diff.sidecar,
                                          drop_sidecars=drops)
        moved_ids = {st.path: row.id for row, st in diff.moved}
        for new_path, side in carried:
            self.writer.sidecar_read(moved_ids[new_path], side)
        shallow_real = {os.path.realpath(s) for s in shallow}
        deep = [real for real in (os.path.realpath(os.fsencode(r)) for r in roots) if real not in shallow_real]
        unlisted = [(path, reason) for path, reason in diff.errors if reason.startswith("cannot list folder")]
        self.writer.folders_scanned(deep, sorted(shallow_real), unlisted)
        self.writer.flush()
        registered.result()
        if drops:  # after the commit, from the list it wrote: a crash in between leaves them to the next open
            self.drop_sidecars([row.path for row in diff.removed])
        self.pipeline.wake()
        return report

    def drop_sidecars(self, images: list[bytes]) -> None:
        """Remove the sidecars of these deleted images where pixdex alone wrote them (`sidecar_drops`)."""
        self.sidecars.drop(images)
        self.writer.sidecars_dropped(images)
        self.writer.flush()

    def reindex(self, paths: list[Path]) -> int:
        """Queue these files (or every indexed file below these folders) ahead of everything else."""
        reader = Catalog(self.layout.catalog, read_only=True)
        try:
            ids = {row.id for row in reader.under_paths(paths)}
        finally:
            reader.close()
        queued = self.writer.enqueue(sorted(ids), ASKED, "asked for")
        self.writer.read_text_again(sorted(ids))
        self.writer.flush()
        queued.result()
        self.pipeline.wake()
        return len(ids)

    def forget(self, roots: list[Path], keep: list[bytes]) -> int:
        """Remove what is indexed below folders that are no longer watched (their files stay on disk), and the
        unreadable folders noted there — except below `keep`, the folders still watched (real paths): a
        collection inside a removed one keeps its images."""
        reader = Catalog(self.layout.catalog, read_only=True)
        try:
            rows = [row for row in reader.under_paths(roots) if not below_any(row.path, keep, itself=True)]
        finally:
            reader.close()
        gone = [os.fsencode(os.path.realpath(r)) for r in roots]
        self.writer.register([], [], [], [], rows)
        self.writer.submit(lambda catalog, gen: catalog.forget_folder_errors(gone, keep))
        self.writer.flush()
        return len(rows)

    def drain(self, progress: Callable[[Stats], None] | None = None, poll: float = 0.05) -> None:
        """Wait until nothing is queued or in flight; raises the error that stopped the pipeline, if any."""
        while True:
            if progress:
                progress(self.stats)
            if self.pipeline.idle():
                self.writer.flush()
                if self.pipeline.idle():
                    break
            time.sleep(poll)
        if self.pipeline.fatal is not None:
            raise self.pipeline.fatal
        hashed = self.phashes.drain()  # rows indexed before pixdex hashed images (or whose sidecar spared the decode)
        with self.stats.lock:
            self.stats.hashed += hashed

    def drain_text(self, progress: Callable[[int], None] | None = None, poll: float = 0.5) -> int:
        """Wait until the OCR stage has read every indexed image (`read_text`); returns how many it read.
        `progress` is told how many wait."""
        if self.ocr is None:
            return 0
        reader = Catalog(self.layout.catalog, read_only=True)
        try:
            while (pending := reader.ocr_counts(self.ocr.id)["pending"]) > 0:
                if progress:
                    progress(pending)
                time.sleep(poll)
        finally:
            reader.close()
        self.writer.flush()
        return int(self.ocr.done)

    def close(self) -> None:
        self._close_opened()

    def _close_opened(self) -> None:
        while self._opened:
            closer = self._opened.pop()
            try:
                closer()
            except Exception:  # closing the rest matters more than one failure
                log.exception("error while closing the indexer")


def _make_private(root: Path) -> None:
    """A data directory others may read (made by an older pixdex, or by hand) becomes the owner's alone."""
    st = root.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(root, st.st_mode & 0o700 | 0o700)
        log.info("%s: the data directory was readable by others; it is the owner's alone now (0700)", root)


def lock_data_dir(root: Path, lock: Path, holder: int | None = None) -> IO[str]:
    """One writer per data directory: an flock held for the writer's life, with the holder's pid in it
    (`holder`: the process a person would stop — `pixdex serve` for its indexing process). The data directory is
    private (0700): the catalog holds every path, keyword, description and text read from the person's images."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _make_private(root)
    handle = open(lock, "a+")  # noqa: SIM115 - held until the indexer closes
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        who = handle.read().strip() or "another process"
        handle.close()
        raise PixdexError(f"{root}: already being indexed by pid {who} (a `pixdex serve` or `pixdex index`); "
                          "wait for an index run to finish, or stop the daemon first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(holder or os.getpid()))
    handle.flush()
    return handle
