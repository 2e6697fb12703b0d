"""The indexing pipeline, as an explicit list of stages joined by generators.

    scan (diff the tree) → decode + preprocess (thread pool, bounded look-ahead)
        → batch → infer (CLIP image tower, tagger) → sidecar (+ existing metadata) → write

A file that cannot be read, decoded or tagged is recorded as failed with its reason and left
out of its batch; the batch stays aligned and the run goes on. Each stage adds its wall time
to `RunStats.seconds` (decode counts worker time), which the benchmark reports.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pixdex.daemon.config import Config
from pixdex.indexer.catalog import FileStat, ImageRow
from pixdex.indexer.decode import ExifFacts, decode_image
from pixdex.indexer.embedder import ClipModel
from pixdex.indexer.errors import ModelError, ReadError, SidecarError, display_path
from pixdex.indexer.scan import Diff, content_hash, diff_tree
from pixdex.indexer.sidecar import PersonMetadata, carry_over, person_metadata, read_embedded, read_sidecar, \
    sidecar_path, write_tags
from pixdex.indexer.tagger import Tagger
from pixdex.indexer.writer import Indexed, Stores, Writer

log = logging.getLogger(__name__)
COMMIT_EVERY = 256  # images between commits of the three stores


@dataclass
class Models:
    clip: ClipModel
    tagger: Tagger | None

    @property
    def ids(self) -> tuple[str, str | None]:
        return self.clip.id, self.tagger.id if self.tagger else None

    @property
    def min_side(self) -> int:
        return max(self.clip.image_size, self.tagger.image_size if self.tagger else 0)


def load_models(config: Config) -> Models:
    clip = ClipModel(config.model_dir / "clip" / config.models.clip, config.models.threads)
    tagger = None
    if config.models.tagger:
        tagger = Tagger(config.model_dir / "tagger" / config.models.tagger, config.tagger, config.models.threads)
    return Models(clip, tagger)


@dataclass
class Job:
    image_id: int
    stat: FileStat
    indexed_hash: str | None = None  # content already indexed under this id, if still valid


@dataclass
class Prepared:
    job: Job
    digest: str = ""
    width: int = 0
    height: int = 0
    exif: ExifFacts = field(default_factory=ExifFacts)
    clip_input: NDArray[np.float32] | None = None
    tag_input: NDArray[np.float32] | None = None
    error: str | None = None
    same_content: bool = False


@dataclass
class RunStats:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    decoded: int = 0
    embedded: int = 0
    tagged: int = 0
    inference_calls: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    folder_errors: list[tuple[str, str]] = field(default_factory=list)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add_time(stage, time.perf_counter() - start)

    def add_time(self, stage: str, seconds: float) -> None:
        with self._lock:  # decode threads report too
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class Pipeline:
    def __init__(self, config: Config, models: Models, stores: Stores,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.config = config
        self.models = models
        self.stores = stores
        self.progress = progress or (lambda done, total: None)
        self.stats = RunStats()

    def run(self, roots: list[Path]) -> RunStats:
        s = self.stats
        with Writer(self.stores, *self.models.ids) as writer:
            with s.timing("scan"):
                diff = diff_tree(self.stores.catalog, [os.fsencode(r) for r in roots],
                                 self.config.library.skip_dirs, self.config.library.follow_symlinks,
                                 self.models.ids)
            s.folder_errors = [(display_path(p), reason) for p, reason in diff.errors]
            jobs = self._register(diff, writer)
            writer.commit()
            stream: Iterable[object] = jobs
            for stage in self.stages(writer):
                stream = stage(stream)  # type: ignore[arg-type]
            done = 0
            for written in stream:
                done += written  # type: ignore[operator]
                self.progress(done, len(jobs))
        s.failed += len(diff.failed)
        return s

    def stages(self, writer: Writer) -> list[Callable[[Iterable[object]], Iterator[object]]]:
        return [self.decode, self.batch, self.infer, self.sidecars, lambda batches: self.write(batches, writer)]  # type: ignore[list-item]

    def _register(self, diff: Diff, writer: Writer) -> list[Job]:
        s = self.stats
        s.unchanged, s.removed, s.moved = len(diff.unchanged), len(diff.removed), len(diff.moved)
        s.new, s.changed = len(diff.new), len(diff.changed) + len(diff.stale)
        writer.remove(diff.removed)
        jobs: list[Job] = []
        for row, st in diff.moved:
            writer.move(row, st)
            if row.state != "done" or (row.clip_model, row.tagger_model) != self.models.ids:
                jobs.append(Job(row.id, st))
            elif self.config.sidecar.write:
                self._carry_sidecar(row, st)
        jobs += [Job(writer.add_pending(st), st) for st in diff.new]
        for row, st in diff.changed:
            writer.mark_changed(row, st)
            current = row.state == "done" and (row.clip_model, row.tagger_model) == self.models.ids
            jobs.append(Job(row.id, st, row.hash if current else None))
        jobs += [Job(row.id, FileStat(row.path, row.dev, row.ino, row.size, row.mtime_ns)) for row in diff.stale]
        return jobs

    def _carry_sidecar(self, row: ImageRow, st: FileStat) -> None:
        """A moved image gets its sidecar at the new name: the old one's content plus pixdex's tags."""
        try:
            carry_over(row.fspath, st.fspath)
            write_tags(st.fspath, [str(t["name"]) for t in row.tag_list], self.config.sidecar.tag_parent,
                       self._sidecar_model)
        except SidecarError as exc:
            log.warning("%s", exc)

    @property
    def _sidecar_model(self) -> str:
        return self.models.tagger.id if self.models.tagger else self.models.clip.id

    # Stage: decode + preprocess on a thread pool, at most `lookahead_batches` batches ahead.
    def decode(self, jobs: Iterable[Job]) -> Iterator[Prepared]:
        window = self.config.decode.lookahead_batches * self.config.models.batch_size
        with ThreadPoolExecutor(self.config.decode.workers, thread_name_prefix="pixdex-decode") as pool:
            pending: deque[Future[Prepared]] = deque()
            for job in jobs:
                pending.append(pool.submit(self._prepare, job))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _prepare(self, job: Job) -> Prepared:
        start = time.perf_counter()
        item = Prepared(job)
        path = job.stat.fspath
        try:
            data = path.read_bytes()
            item.digest = content_hash(data)
            if item.digest == job.indexed_hash:
                item.same_content = True
                return item
            decoded = decode_image(data, str(path), self.models.min_side, self.config.decode.max_pixels)
            item.width, item.height, item.exif = decoded.width, decoded.height, decoded.exif
            item.clip_input = self.models.clip.preprocess(decoded.image)
            if self.models.tagger:
                item.tag_input = self.models.tagger.preprocess(decoded.image)
        except ReadError as exc:
            item.error = exc.reason
        except OSError as exc:
            item.error = f"cannot read file: {exc.strerror or exc}"
        except Exception as exc:  # a hostile file must never stop the run
            log.exception("unexpected error decoding %s", display_path(path))
            item.error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            self.stats.add_time("decode", time.perf_counter() - start)
        return item

    def batch(self, items: Iterable[Prepared]) -> Iterator[list[Prepared]]:
        size = self.config.models.batch_size
        current: list[Prepared] = []
        for item in items:
            self.stats.decoded += item.clip_input is not None
            current.append(item)
            if len(current) == size:
                yield current
                current = []
        if current:
            yield current

    def infer(self, batches: Iterable[list[Prepared]]) -> Iterator[list[Prepared | Indexed]]:
        for batch in batches:
            ready = [i for i in batch if i.error is None and not i.same_content]
            results: dict[int, Indexed] = {}
            if ready:
                with self.stats.timing("infer"):
                    results = self._infer(ready)
            yield [results.get(id(i), i) for i in batch]

    def _infer(self, ready: list[Prepared]) -> dict[int, Indexed]:
        try:
            embeddings = self.models.clip.embed_images(np.stack([i.clip_input for i in ready]))  # type: ignore[misc]
            self.stats.embedded += len(ready)
            tags: list[list[dict[str, object]]] = [[] for _ in ready]
            if self.models.tagger:
                found = self.models.tagger.tag(np.stack([i.tag_input for i in ready]))  # type: ignore[misc]
                tags = [[{"name": t.name, "confidence": t.confidence, "category": t.category} for t in row]
                        for row in found]
                self.stats.tagged += len(ready)
        except ModelError:
            raise  # the model's fault, not the files': stop the run, keep them pending
        except (RuntimeError, ValueError) as exc:
            for item in ready:
                item.error = f"model failed on this batch: {exc}"
            return {}
        self.stats.inference_calls += 2 if self.models.tagger else 1
        return {id(item): Indexed(item.job.image_id, item.job.stat, item.digest, item.width, item.height,
                                  item.exif.taken, item.exif.camera, tags[n], embeddings[n])
                for n, item in enumerate(ready)}

    def sidecars(self, batches: Iterable[list[Prepared | Indexed]]) -> Iterator[list[Prepared | Indexed]]:
        for batch in batches:
            with self.stats.timing("sidecar"):
                for item in batch:
                    if isinstance(item, Indexed):
                        self._sidecar(item)
            yield batch

    def _sidecar(self, item: Indexed) -> None:
        image = item.stat.fspath
        person = read_embedded(image)
        try:
            existing = person_metadata(read_sidecar(sidecar_path(image)))
            if self.config.sidecar.write:
                write_tags(image, [str(t["name"]) for t in item.tags], self.config.sidecar.tag_parent,
                           self._sidecar_model)
        except SidecarError as exc:
            item.sidecar_error = exc.reason
            log.warning("%s", exc)
            existing = PersonMetadata()
        item.metadata = " ".join(dict.fromkeys(filter(None, [person.text(), existing.text()])))

    def write(self, batches: Iterable[list[Prepared | Indexed]], writer: Writer) -> Iterator[int]:
        since_commit = 0
        for batch in batches:
            with self.stats.timing("write"):
                writer.store([i for i in batch if isinstance(i, Indexed)])
                for item in batch:
                    if isinstance(item, Prepared) and item.same_content:
                        writer.touch(item.job.image_id, item.job.stat, item.digest)
                        self.stats.changed -= 1
                        self.stats.unchanged += 1
                    elif isinstance(item, Prepared):
                        writer.fail(item.job.image_id, item.job.stat, item.error or "unknown error")
                        self.stats.failed += 1
                        self.stats.failures.append((display_path(item.job.stat.path), item.error or ""))
                since_commit += len(batch)
                if since_commit >= COMMIT_EVERY:
                    writer.commit()
                    since_commit = 0
            yield len(batch)
