"""What runs in worker processes: top-level functions that take paths and specs and return arrays.

Two pools, both pebble `ProcessPool`s started with *spawn* and lowered to idle CPU and I/O
priority from inside (so it holds outside systemd too):

- the decode pool (`decode.workers` processes) runs `prepare` — read, hash, decode, preprocess,
  embedded metadata — and the pyexiv2 sidecar work (`write_sidecar`, `carry_sidecar`), so neither
  pyexiv2 nor Pillow ever runs in the process that serves queries;
- the inference worker (one process) owns the model sessions (`infer`, `describe`), cached
  with an idle TTL.

pebble replaces a worker that dies (a decoder segfault) and fails only the task it held, with
`ProcessExpired`; a task that runs past its timeout is killed the same way. The caller turns
those into the file's failure.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import stat
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.catalog.rows import FileStat
from pixdex.indexer.decode import ExifFacts, decode_image
from pixdex.indexer import faults
from pixdex.indexer.errors import ReadError, SidecarError
from pixdex.indexer.sidecars.state import SidecarState
from pixdex.indexer.preprocess import ClipTransform, clip_preprocess, wd14_preprocess
from pixdex.indexer.digest import content_hash
from pixdex.indexer.sections import ClipTagSettings, PipelineSettings, Runtime, TaggerSettings

log = logging.getLogger(__name__)



def make_pool(workers: int, settings: PipelineSettings) -> Any:
    """A pool whose workers never see the terminal's Ctrl-C: SIGINT is blocked while the pool (and its
    threads, which start the workers, now and when they replace one) are created, and a blocked
    signal stays blocked across exec. Stopping them is the parent's job."""
    from pebble import ProcessPool

    # Blocked first, then ignored (children are started ignoring it); Linux keeps a blocked signal pending
    # while it is ignored, so a Ctrl-C in this window reaches this process once the handler is back. One
    # already pending when SIG_IGN is set would be discarded (POSIX): that one is delivered first. And the
    # resource tracker is started before: starting it unblocks SIGINT in the thread that does it (pebble's,
    # inside the window), which then takes a Ctrl-C and drops it (ignored).
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    main = threading.current_thread() is threading.main_thread()
    if main and signal.SIGINT in signal.sigpending():
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # the handler runs now (KeyboardInterrupt)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # a handler that did not raise: go on
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        pool = ProcessPool(max_workers=workers, initializer=lower_priority,
                           initargs=(settings.nice, settings.idle_io, settings.idle_cpu),
                           context=multiprocessing.get_context("spawn"))
        pool.active  # noqa: B018 - pebble starts its threads and workers lazily: start them in this window
        return pool
    finally:
        if main:
            signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def lower_priority(nice: int, idle_io: bool, idle_cpu: bool = False) -> None:
    """Run in each worker as it starts: CPU niceness at least `nice` (the daemon's indexing process runs at
    it already, and its workers stay there), optionally the SCHED_IDLE class (any process may lower itself
    to it, sched(7)), I/O to the idle class."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.nice(nice - current)
    if idle_cpu and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:  # priority is a courtesy
            log.debug("cannot enter SCHED_IDLE: %s", exc)
    if idle_io:
        try:
            import psutil

            psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
        except (OSError, AttributeError) as exc:  # not Linux, or not allowed: priority is a courtesy
            log.debug("cannot set idle I/O priority: %s", exc)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


# Decoding ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodeSpec:
    min_side: int
    max_pixels: int
    clip: ClipTransform | None  # None without models: read size, dates and metadata only
    tagger_size: int | None
    known_hash: str | None = None  # content already indexed under this id: skip decoding if unchanged
    # (CLIP model id, keyword model id, sidecar parent, naming): take the embedding and keywords from the
    # image's sidecar when it holds them for these models and this very content — no decode, no model.
    from_sidecar: tuple[str, str, str, str] | None = None
    dim: int = 0  # the CLIP embedding's dimension
    # Without models (reduced mode): take the machine keywords of any model from the sidecar, and the
    # embedding of any export of the configured CLIP model (`from_sidecar[0]` is then its name).
    sidecar_by_name: bool = False


@dataclass
class Prepared:
    stat: FileStat
    digest: str
    same_content: bool = False
    width: int = 0
    height: int = 0
    exif: ExifFacts = field(default_factory=ExifFacts)
    embedded: dict[str, Any] = field(default_factory=dict)  # metadata.Embedded.as_dict(): the image's own
    clip_input: NDArray[np.float32] | None = None
    tag_input: NDArray[np.float32] | None = None
    embedding: NDArray[np.float32] | None = None  # from the sidecar
    machine_tags: list[str] = field(default_factory=list)
    from_sidecar: bool = False  # `machine_tags` (and `embedding`, if any) were taken from the sidecar
    models: tuple[str | None, str | None] = (None, None)  # the models that made them (CLIP, keywords)
    sidecar_id: int | None = None  # the catalog id its sidecar carries (pixdex:Id): a rebuild's is kept
    warnings: str = ""  # what the libraries printed while reading it


def read_regular(path: bytes) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file and the stat of what was read. A FIFO, device or folder is refused
    at once (opened non-blocking, so a FIFO cannot hang the reader)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadError(os.fsdecode(path), "not a regular file (a pipe, device or folder); pixdex reads only "
                                               "image files")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


class Captured:
    """What libraries said while one file was handled: Python warnings (Pillow) and whatever C code
    wrote to stdout/stderr (exiv2, libtiff). It never reaches the terminal raw: the caller logs it
    with the file's name, and adds it to the reason when the file fails."""

    _sink: Any = None  # one temporary file per worker process, reused

    def __init__(self) -> None:
        self.text = ""

    def __enter__(self) -> Captured:
        import tempfile
        import warnings

        if Captured._sink is None:
            Captured._sink = tempfile.TemporaryFile()
        sink = Captured._sink
        sink.seek(0)
        sink.truncate()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(*exc)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        Captured._sink.seek(0)
        said = Captured._sink.read(4000).decode("utf-8", "replace").strip()
        caught = [f"{w.category.__name__}: {w.message}" for w in self._caught]
        self.text = "; ".join(dict.fromkeys([*caught, *(line.strip() for line in said.splitlines() if line.strip())]))


def prepare(path: bytes, spec: DecodeSpec) -> Prepared:
    """Read, hash, decode and preprocess one image. Raises ReadError (or OSError) for this file; what
    the libraries printed on the way is in `Prepared.warnings` (or the error's reason)."""
    captured = Captured()
    failed: ReadError | None = None
    with captured:
        try:
            item = _prepare(path, spec)
        except ReadError as exc:
            failed = exc
    if failed is not None:
        if captured.text:
            raise ReadError(failed.path, f"{failed.reason} (the libraries said: {captured.text[:500]})") from None
        raise failed
    item.warnings = captured.text
    return item


def _prepare(path: bytes, spec: DecodeSpec) -> Prepared:
    faults.crash_on(path)
    faults.hold("decode", [path])
    data, st = read_regular(path)
    item = Prepared(FileStat.of(path, st), content_hash(data))
    if item.digest == spec.known_hash:
        item.same_content = True
        return item
    if spec.from_sidecar is not None and _from_sidecar(item, data, path, spec):
        return item
    decoded = decode_image(data, os.fsdecode(path), spec.min_side, spec.max_pixels)
    item.width, item.height, item.exif = decoded.width, decoded.height, decoded.exif
    if spec.clip is not None:
        item.clip_input = clip_preprocess(decoded.image, spec.clip)
    if spec.clip is not None and spec.tagger_size:
        item.tag_input = wd14_preprocess(decoded.image, spec.tagger_size)
    from pixdex.indexer.metadata.image import embedded_metadata

    item.embedded = embedded_metadata(data).as_dict()
    return item


def _from_sidecar(item: Prepared, data: bytes, path: bytes, spec: DecodeSpec) -> bool:
    """Fill `item` from the image's sidecar when it carries the embedding (and keywords) of the configured
    models for this content: the image is then only probed (header, EXIF, metadata), never decoded. Without
    models (`spec.sidecar_by_name`), whatever keywords and embedding it holds for this content are taken."""
    from pixdex.indexer.decode import probe_image
    from pixdex.indexer.metadata.image import embedded_metadata
    from pixdex.indexer.metadata.reconcile import as_list
    from pixdex.indexer.sidecars.embedding import read_embedding
    from pixdex.indexer.sidecars.keys import EMBEDDING_MODEL, IMAGE_ID, MACHINE, MODEL, REJECTED
    from pixdex.indexer.sidecars.naming import sidecar_path
    from pixdex.indexer.sidecars.read import read_sidecar

    assert spec.from_sidecar is not None
    clip_id, keyword_model, _parent, naming = spec.from_sidecar
    try:
        xmp = read_sidecar(sidecar_path(Path(os.fsdecode(path)), naming))
    except SidecarError:
        return False
    stored_id = str(xmp.get(IMAGE_ID) or "")
    item.sidecar_id = int(stored_id) if stored_id.isdigit() and 0 < int(stored_id) < 2**63 else None
    stored_clip, stored_keywords = str(xmp.get(EMBEDDING_MODEL) or ""), str(xmp.get(MODEL) or "")
    if spec.sidecar_by_name:
        clip_id = stored_clip if stored_clip.rsplit("@", 1)[0] == clip_id else ""
    vector = read_embedding(xmp, clip_id, item.digest)
    rejected = set(as_list(xmp.get(REJECTED)))
    machine = [t for t in as_list(xmp.get(MACHINE)) if t not in rejected]
    if spec.sidecar_by_name:
        if not (stored_keywords and machine) and vector is None:
            return False
    elif vector is None or stored_keywords != keyword_model or len(vector) != spec.dim:
        return False
    item.width, item.height, item.exif = probe_image(data, os.fsdecode(path), spec.max_pixels)
    item.embedding, item.machine_tags, item.from_sidecar = vector, machine, True
    if vector is not None:
        item.models = (clip_id, stored_keywords if stored_keywords != clip_id else None)
    item.embedded = embedded_metadata(data).as_dict()
    return True


# Sidecars ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SidecarSpec:
    write: bool  # sidecar.write, and there are machine keywords to write (never in reduced mode)
    parent: str
    naming: str
    model_id: str
    embedded: bool = False  # also into a JPEG's/TIFF's own XMP


def sync_sidecar(path: bytes, tags: list[str], rejected: list[str], spec: SidecarSpec,
                 embedding: tuple[str, str, Any] | None = None, image_id: int | None = None) -> SidecarState:
    """Merge pixdex's keywords (and the embedding and the image's id, when given) into the image's sidecar
    (when `spec.write`) and say what it holds now. Never raises for the file: one that cannot be written is
    still read."""
    from pixdex.indexer.sidecars.merge import write_tags
    from pixdex.indexer.sidecars.read import read_state

    image = Path(os.fsdecode(path))
    faults.hold("sidecar", [path])
    with Captured():
        if spec.write:
            try:
                state = write_tags(image, tags, spec.parent, spec.model_id, spec.naming, rejected=rejected,
                                   embedding=embedding, image_id=image_id)
                return _into_image(image, state, tags, rejected, spec, embedding) if spec.embedded else state
            except SidecarError as exc:
                return read_state(image, spec.parent, spec.naming, error=exc.reason)
            except OSError as exc:  # a name too long for a sidecar beside it, a read-only folder, …
                return read_state(image, spec.parent, spec.naming, error=f"cannot write sidecar: {exc.strerror or exc}")
        return read_state(image, spec.parent, spec.naming)


def _into_image(image: Path, state: SidecarState, tags: list[str], rejected: list[str], spec: SidecarSpec,
                embedding: tuple[str, str, Any] | None) -> SidecarState:
    """[sidecar] embedded: the sidecar's keyword fields into the image's own XMP. The image's content hash
    changes, so the embedding stored in the sidecar is stamped with the new one."""
    import dataclasses

    from pixdex.indexer.sidecars.embedded import applies, keyword_values, write_keywords
    from pixdex.indexer.sidecars.merge import write_tags
    from pixdex.indexer.sidecars.read import read_sidecar

    if state.path is None or not applies(image):
        return state
    try:
        if not write_keywords(image, keyword_values(read_sidecar(Path(os.fsdecode(state.path))))):
            return state
    except SidecarError as exc:
        return dataclasses.replace(state, error=exc.reason)
    data, st = read_regular(os.fsencode(image))
    digest = content_hash(data)
    if embedding is not None:
        state = write_tags(image, tags, spec.parent, spec.model_id, spec.naming, rejected=rejected,
                           embedding=(embedding[0], digest, embedding[2]))
    return dataclasses.replace(state, image_stat=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                               image_digest=digest)


@dataclass(frozen=True)
class Move:
    """An indexed image that moved, as the scanner carries its sidecar along."""

    old: bytes
    new: bytes
    tags: list[str]  # its machine keywords and the rejected ones, as the catalog holds them now
    rejected: list[str]
    merge: bool = True  # False: it is queued, and its own turn merges them
    embedding: tuple[str, str, Any] | None = None  # (model, content hash, vector) of the catalog's row
    image_id: int | None = None


def carry_sidecar(move: Move, spec: SidecarSpec) -> SidecarState:
    """After a move: the new image's sidecar is the old one, moved, with pixdex's keywords, the row's embedding
    and id merged (unless `move.merge` is False)."""
    from pixdex.indexer.sidecars.read import read_state
    from pixdex.indexer.sidecars.moves import carry_over

    old, new = move.old, move.new
    try:
        carry_over(Path(os.fsdecode(old)), Path(os.fsdecode(new)), spec.naming, spec.parent)
    except SidecarError as exc:
        return read_state(Path(os.fsdecode(new)), spec.parent, spec.naming, error=exc.reason)
    except OSError as exc:
        return read_state(Path(os.fsdecode(new)), spec.parent, spec.naming,
                          error=f"cannot move sidecar: {exc.strerror or exc}")
    if not move.merge:
        return read_state(Path(os.fsdecode(new)), spec.parent, spec.naming)
    return sync_sidecar(new, move.tags, move.rejected, spec, move.embedding, move.image_id)


def edit_sidecar(path: bytes, add: list[str], remove: list[str], description: str | None,
                 spec: SidecarSpec) -> SidecarState:
    """A person's edit (PATCH /items), in a worker: pyexiv2 never runs in the serving process. Raises
    SidecarError when the sidecar cannot be written (the edit is then not made)."""
    from pixdex.indexer.sidecars.merge import edit_person

    image = Path(os.fsdecode(path))
    try:
        with Captured():
            return edit_person(image, add, remove, description, spec.parent, spec.naming)
    except OSError as exc:
        raise SidecarError(image, f"cannot write sidecar: {exc.strerror or exc}") from None


def prepare_for_llm(path: bytes, max_side: int, max_pixels: int) -> tuple[bytes, str]:
    """The image as a vision LLM gets it: EXIF orientation applied, at most `max_side` on its long side,
    JPEG; with the content hash it was read at. Raises ReadError naming the file."""
    import io

    from PIL import Image

    image_path = os.fsdecode(path)
    try:
        data, _st = read_regular(path)
    except OSError as exc:
        raise ReadError(image_path, f"cannot read: {exc.strerror or exc}") from None
    with Captured():
        decoded = decode_image(data, image_path, max_side, max_pixels)
    image = decoded.image
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue(), content_hash(data)


def describe_sidecar(path: bytes, machine: list[str], rejected: list[str], spec: SidecarSpec, description: str,
                     text: str) -> SidecarState:
    """A description's results into the sidecar: the keywords as machine keywords (with the others), the
    description into dc:description where it is empty or pixdex's, the visible text into pixdex:Text."""
    from pixdex.indexer.sidecars.merge import write_tags
    from pixdex.indexer.sidecars.read import read_state

    image = Path(os.fsdecode(path))
    with Captured():
        if not spec.write:
            return read_state(image, spec.parent, spec.naming)
        try:
            return write_tags(image, machine, spec.parent, spec.model_id, spec.naming, description=description,
                              rejected=rejected, text=text)
        except SidecarError as exc:
            return read_state(image, spec.parent, spec.naming, error=exc.reason)
        except OSError as exc:
            return read_state(image, spec.parent, spec.naming, error=f"cannot write sidecar: {exc.strerror or exc}")


def drop_sidecar(path: bytes, spec: SidecarSpec) -> bool:
    """The image is gone: remove its sidecar if pixdex alone wrote it (see `remove_if_only_ours`)."""
    from pixdex.indexer.sidecars.moves import remove_if_only_ours

    try:
        with Captured():
            return remove_if_only_ours(Path(os.fsdecode(path)), spec.parent, spec.naming)
    except OSError:
        return False


# Inference -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    clip_dir: Path
    tagger_dir: Path | None
    tagger: TaggerSettings
    threads: int
    idle_ttl: float
    clip_tags: ClipTagSettings | None = None  # None: no vocabulary tags
    vocab_cache: Path | None = None  # where the vocabulary's text embeddings are cached
    runtime: Runtime = Runtime()  # [models] providers and optimization


@dataclass(frozen=True)
class ModelInfo:
    clip_id: str
    dim: int
    transform: ClipTransform | None
    tagger_id: str | None
    tagger_size: int | None
    missing: str = ""  # reduced mode: why the models could not load, and the command that fixes it

    @classmethod
    def reduced(cls, why: str) -> ModelInfo:
        """No models: names, folders and the files' own metadata are indexed; images wait for models."""
        return cls("", 0, None, None, None, why)

    @property
    def ids(self) -> tuple[str, str | None]:
        return self.clip_id, self.tagger_id

    @property
    def has_models(self) -> bool:
        return self.transform is not None

    @property
    def min_side(self) -> int:
        return max(self.transform.size if self.transform else 64, self.tagger_size or 0)


@dataclass
class Inferred:
    embeddings: NDArray[np.float32]
    tags: list[list[dict[str, object]]]
    calls: int


_models: dict[str, Any] = {}  # by repr(spec): the tagger settings hold a list


def _loaded(spec: ModelSpec) -> Any:
    """This worker's models for `spec` (their sessions load on first use and unload after the TTL)."""
    key = repr(spec)
    if key not in _models:
        from pixdex.indexer.embedder import ClipModel
        from pixdex.indexer.modelcache import ModelCache
        from pixdex.indexer.tagger import Tagger

        cache = ModelCache(spec.idle_ttl)
        clip = ClipModel(spec.clip_dir, spec.threads, cache, spec.runtime)
        tagger = Tagger(spec.tagger_dir, spec.tagger, spec.threads, cache, spec.runtime) if spec.tagger_dir else None
        vocab = None
        if spec.clip_tags is not None and spec.clip_tags.enabled:
            from pixdex.indexer.cliptags import ClipTagger

            vocab = ClipTagger(clip, spec.clip_tags, spec.vocab_cache or spec.clip_dir / "vocabulary")
        _models[key] = (clip, tagger, vocab, cache)
    return _models[key]


def describe(spec: ModelSpec) -> ModelInfo:
    """Check that the models load, and say what the decoders must produce for them. The tagger id names
    both taggers (WD14 and the CLIP vocabulary): a change of either tags the images again."""
    clip, tagger, vocab, _cache = _loaded(spec)
    clip.visual.input  # noqa: B018 - loads the image tower now: a broken model stops work before any file
    ids = [t.id for t in (tagger, vocab) if t is not None]
    return ModelInfo(clip.id, clip.dim, clip.transform, "+".join(ids) or None,
                     tagger.image_size if tagger else None)


def infer(spec: ModelSpec, clip_batch: NDArray[np.float32], tag_batch: NDArray[np.float32] | None) -> Inferred:
    clip, tagger, vocab, _cache = _loaded(spec)
    embeddings = clip.embed_images(clip_batch)
    tags: list[list[dict[str, object]]] = [[] for _ in range(len(clip_batch))]
    calls = 1
    if tagger is not None and tag_batch is not None:
        tags = [[{"name": t.name, "confidence": t.confidence, "category": t.category, "source": "wd14"}
                 for t in found] for found in tagger.tag(tag_batch)]
        calls += 1
    if vocab is not None:
        for mine, found in zip(tags, vocab.tag(embeddings), strict=True):
            have = {str(t["name"]).casefold() for t in mine}
            mine += [t for t in found if t["name"].casefold() not in have]  # WD14's own word wins
    return Inferred(embeddings, tags, calls)


def worker_state(spec: ModelSpec) -> dict[str, Any]:
    """The inference worker's loaded model sessions and its memory (for status)."""
    import psutil

    loaded: list[str] = []
    providers: list[str] = []
    if repr(spec) in _models:
        clip, _tagger, _vocab, cache = _models[repr(spec)]
        loaded = [str(k[0] if isinstance(k, tuple) else k) for k in cache.loaded()]
        providers = clip.visual.used
    return {"pid": os.getpid(), "rss": psutil.Process().memory_info().rss, "loaded": loaded, "providers": providers}


def prepare_query_image(data: bytes, name: str, spec: DecodeSpec) -> NDArray[np.float32]:
    """An uploaded query image, decoded and preprocessed for CLIP (in a worker: Pillow never runs in
    the process that serves queries). Raises ReadError naming the upload."""
    if spec.clip is None:
        raise ReadError(name, "searching by image needs the CLIP model")
    decoded = decode_image(data, name, spec.min_side, spec.max_pixels)
    return clip_preprocess(decoded.image, spec.clip)
