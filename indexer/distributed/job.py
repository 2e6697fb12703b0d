"""`pixdex index --ray`: the library embedded and tagged as one Ray Data job, its results in the sidecars.

    paths (pixdex's scan walk, on the driver)
      → decode_batch     CPU tasks       prepare: read, hash, decode, preprocess (a task per file); `skipped` when
                                         the sidecar is current
      → EmbedActor       actor pool      inference.infer: CLIP image tower, tagger, vocabulary tags
      → write_batch      CPU tasks       sync_sidecar: keywords, embedding, content hash, model id (a task per file)
      → rows (path, status, reason, nodes) back to the driver

Ray Data streams the blocks between the stages with back-pressure, retries the tasks of a lost node and restarts
lost actors; a file that crashes its decoder is that file's failure (`tasks.one_task_each`). The models reach the
actors through the object store (`bundle`). The catalog is not touched here: the caller fills it from the sidecars
afterwards, with no model call (`daemon/commands/distributed.py`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.data import ActorPoolStrategy, DataContext

from pixdex.indexer.distributed.actor import ActorSpec, EmbedActor
from pixdex.indexer.distributed.bundle import ModelBundle, pack
from pixdex.indexer.distributed.cluster import JobSettings, check_readable, connect, nodes, resolve
from pixdex.indexer.distributed.manifest import JobFiles, ManifestWriter, write_log
from pixdex.indexer.distributed.tasks import FAILED, INDEXED, SKIPPED, decode_batch, write_batch
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.inference import ModelInfo, describe, model_spec, vocabulary_cache
from pixdex.indexer.paths import display_path
from pixdex.indexer.prepare import DecodeSpec, FromSidecar
from pixdex.indexer.scan.walk import normalize_roots, walk
from pixdex.indexer.settings import Config
from pixdex.indexer.sidecars.tasks import SidecarSpec

log = logging.getLogger(__name__)

# How often one batch may end its model actor before the job stops. A model process that dies is restarted (Ray
# Data's default, as for a lost node), and its batch runs again on the new one; Ray Data's default then retries it
# without end, and a batch that kills every actor it reaches (a crash in the model runtime, the OOM killer) would
# hold the job for ever. The model sees fixed-size tensors, not files: such a death is the model's or the machine's,
# so the job stops, rather than blaming a file.
MODEL_TRIES = 3


@dataclass
class JobReport:
    settings: JobSettings
    images: int = 0
    indexed: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    nodes: dict[str, int] = field(default_factory=dict)  # node label → rows it worked on
    seconds: float = 0.0
    folder_errors: list[tuple[str, str]] = field(default_factory=list)
    paths: list[bytes] = field(default_factory=list)  # every row's path, as it came back (duplicates kept)
    files: JobFiles | None = None  # its log and manifest

    def as_dict(self) -> dict[str, Any]:
        s, done = self.settings, self.indexed + self.skipped + len(self.failures)
        return {"images": self.images, "indexed": self.indexed, "skipped": self.skipped,
                "failed": len(self.failures), "failures": self.failures, "nodes": self.nodes,
                "seconds": round(self.seconds, 2),
                "images_per_second": round(done / self.seconds, 2) if self.seconds else 0,
                "rows": len(self.paths), "duplicates": len(self.paths) - len(set(self.paths)),
                "actors": s.actors, "batch_size": s.batch_size, "gpus": s.gpus, "folder_errors": self.folder_errors,
                "log": str(self.files.log) if self.files else None,
                "manifest": str(self.files.manifest) if self.files else None}


def library_files(config: Config, roots: list[Path]) -> tuple[list[bytes], list[tuple[str, str]]]:
    """The image files under `roots`, walked as the scanner walks them (skips, exclusions, links, markers)."""
    errors: list[tuple[bytes, str]] = []
    normal = normalize_roots([os.fsencode(r) for r in roots])
    lib = config.library
    paths = [st.path for root in normal
             for st in walk(root, lib.skip_dirs, lib.follow_symlinks, errors, library=normal, exclude=lib.exclude)]
    return paths, [(display_path(p), why) for p, why in errors]


def load_models(config: Config) -> tuple[ModelInfo, ModelBundle]:
    """The configured models' ids and what the decoders must make (loaded here once), and their files as a bundle
    for the nodes (with the vocabulary's text embeddings, computed here when not cached)."""
    spec = model_spec(config)
    info = describe(spec)
    return info, pack(spec.clip_dir, spec.tagger_dir, vocabulary_cache(spec))


def check_config(config: Config) -> None:
    if not config.sidecar.write:
        raise PixdexError("[sidecar] write = false: `pixdex index --ray` hands its results over in the sidecars; "
                          "set it to true, or index with `pixdex index` on one machine")
    if not config.sidecar.embedding:
        raise PixdexError("[sidecar] embedding = false: `pixdex index --ray` hands the embeddings over in the "
                          "sidecars; set it to true, or index with `pixdex index` on one machine")


def run_job(config: Config, roots: list[Path], settings: JobSettings, announce: Callable[[str], None],
            progress: Callable[[int], Callable[[], None]] | None = None) -> JobReport:
    """Walk `roots`, run the job on the cluster at `settings.address`, return what each image became, with its log
    and Parquet manifest under the data directory (`manifest.JobFiles`). `announce` gets the settings line before
    the work starts; `progress(total)` returns the callback called per row."""
    check_config(config)
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        announce(line)

    connect(settings.address)
    try:
        paths, folder_errors = library_files(config, roots)
        info, bundle = load_models(config)
        live = nodes()
        resolved = resolve(settings, live, config.models.batch_size)
        check_readable(paths, live)
        files = JobFiles.new(config.layout.root)
        say(f"ray: {len(live)} node(s), {sum(n.cpus for n in live):g} CPU(s), {sum(n.gpus for n in live):g} "
                 f"GPU(s); {len(paths)} image(s); --ray-actors {resolved.actors} --ray-batch-size "
                 f"{resolved.batch_size} --ray-gpus {resolved.gpus:g} (per actor); models {info.clip_id}"
                 f"{' + ' + info.tagger_id if info.tagger_id else ''} "
                 f"({bundle.size / 1e6:.1f} MB via the object store)")
        say(f"log and manifest: {files.folder}")
        report = JobReport(resolved, images=len(paths), folder_errors=folder_errors, files=files)
        start = time.perf_counter()
        with ManifestWriter(files.manifest, info.clip_id, info.tagger_id or info.clip_id) as manifest:
            if paths:
                try:
                    _collect(_dataset(config, paths, info, bundle, resolved), report, manifest,
                             progress(len(paths)) if progress else None)
                except ray.exceptions.RayError as exc:
                    report.seconds = time.perf_counter() - start
                    write_log(files.log, [*said, f"stopped: {_first_line(exc)}"], report.as_dict())
                    raise _stopped(exc, report, files) from exc
        report.seconds = time.perf_counter() - start
        write_log(files.log, said, report.as_dict())
        return report
    finally:
        ray.shutdown()


def _dataset(config: Config, paths: list[bytes], info: ModelInfo, bundle: ModelBundle, s: JobSettings) -> Any:
    assert info.transform is not None and s.batch_size is not None
    side = config.sidecar
    decode = DecodeSpec(info.min_side, config.decode.max_pixels, info.transform, info.tagger_size, None,
                        FromSidecar(info.clip_id, info.tagger_id or info.clip_id, side.tag_parent, side.naming),
                        info.dim)
    actor = ActorSpec(config.tagger, config.clip_tags if config.clip_tags.enabled else None, config.models.threads,
                      max(config.models.idle_ttl, 3600.0), model_spec(config).runtime, info.transform.size,
                      info.tagger_size, s.gpus)
    sidecar = SidecarSpec(True, side.tag_parent, side.naming, info.tagger_id or info.clip_id)
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows one bar of rows done / total
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-run INFO lines; its warnings stay
    blocks = max(1, min(len(paths) // s.batch_size, 10_000))
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
    # The CPU stages' batch tasks keep Ray Data's retries: a lost node's batches run again elsewhere. A file never
    # fails them: its decode and its sidecar write run in a task of their own (`tasks.one_task_each`), which returns
    # its failure. `max_calls=0` is Ray's default (a worker runs any number of them); given, it makes the decode
    # stage's remote arguments differ from the actors', so Ray Data does not fuse decoding into the model actors
    # (where the actor would wait on every decode) — as it fuses stages whose arguments are equal.
    tasks = {"num_cpus": 1, "batch_size": s.batch_size, "batch_format": "numpy"}
    ds = ds.map_batches(decode_batch, fn_kwargs={"spec": decode}, max_calls=0, **tasks)
    ds = ds.map_batches(EmbedActor, fn_constructor_kwargs={"bundle": [ray.put(bundle)], "spec": actor},
                        batch_size=s.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=s.actors),
                        num_cpus=1, num_gpus=s.gpus or None, max_restarts=-1, max_task_retries=MODEL_TRIES - 1)
    return ds.map_batches(write_batch, fn_kwargs={"spec": sidecar, "clip_id": info.clip_id}, **tasks)


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:500]


def _stopped(exc: ray.exceptions.RayError, report: JobReport, files: JobFiles) -> PixdexError:
    done = report.indexed + report.skipped + len(report.failures)
    chain: list[BaseException] = []  # Ray Data may wrap the actor's error in its own
    at: BaseException | None = exc
    while at is not None and len(chain) < 10:
        chain.append(at)
        at = at.__cause__ or at.__context__
    died = any(isinstance(e, ray.exceptions.ActorDiedError | ray.exceptions.ActorUnavailableError) for e in chain)
    what = (f"a model actor died on the same batch each of the {MODEL_TRIES} times it ran (a crash in the model "
            "runtime, or the machine out of memory: see the Ray logs)" if died else f"Ray failed: {_first_line(exc)}")
    return PixdexError(f"ray: the job stopped after {done} of {report.images} image(s): {what}; the sidecars "
                       f"written so far stay and a re-run skips their images; the job's log: {files.log}")


def _collect(ds: Any, report: JobReport, manifest: ManifestWriter, tick: Callable[[], None] | None) -> None:
    worked: Counter[str] = Counter()
    for row in ds.iter_rows():
        manifest.add(row)
        path, status = bytes(row["path"]), str(row["status"])
        report.paths.append(path)
        if status == INDEXED:
            report.indexed += 1
        elif status == SKIPPED:
            report.skipped += 1
        else:
            assert status == FAILED, status
            report.failures.append((display_path(path), str(row["reason"])))
        worked.update(n for n in str(row["nodes"]).split(",") if n)
        if tick is not None:
            tick()
    labels = {n.id: n.label for n in nodes(alive_only=False)}  # with the nodes that joined or left meanwhile
    report.nodes = {labels.get(node, node[:8]): count for node, count in worked.most_common()}
