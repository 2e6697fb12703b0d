"""`IndexingCore`: the `Core` the indexing process serves, over its `runtime.Daemon` (the scanner, the
watcher, the indexer's pipeline, writer and worker pools). Every call from the serving process lands on
one of these methods (`core_process.CoreHost` answers each on a thread of its own)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import psutil
from numpy.typing import NDArray

from pixdex.daemon import curation
from pixdex.daemon.core_api import Core, Unavailable, Watch
from pixdex.daemon.runtime import Daemon
from pixdex.indexer import thumbnails
from pixdex.indexer.errors import ModelError
from pixdex.indexer.inference import infer, worker_state
from pixdex.indexer.prepare import DecodeSpec, prepare_query_image
from pixdex.indexer.settings import Config


class IndexingCore(Core):
    """Declared a `Core`: a method renamed or retyped here (or there) is a type error where it is made."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def pause(self, paused: bool) -> None:
        self.daemon.pause(paused)

    def reindex(self, paths: list[str]) -> int:
        return self.daemon.reindex([Path(p) for p in paths])

    def watch_add(self, path: str, name: str | None) -> Watch:
        return self.daemon.watch_add(Path(path), name)

    def watch_remove(self, key: str) -> Watch:
        return self.daemon.watch_remove(key)

    def reload(self, config: Config) -> dict[str, Any]:
        return self.daemon.reload(config)

    def edit_item(self, image_id: int, add: list[str], remove: list[str], description: str | None,
                  rating: int | None = None, label: str | None = None) -> None:
        self.daemon.edit_item(image_id, add, remove, description, rating, label)

    def edit_items(self, ids: list[int], add: list[str], remove: list[str], rating: int | None,
                   label: str | None) -> list[dict[str, Any]]:
        return curation.edit_items(self.daemon, ids, add, remove, rating, label)

    def trash_item(self, image_id: int) -> dict[str, Any]:
        return curation.trash_item(self.daemon, image_id)

    def state(self, queued: int = 0, workers: bool = False) -> dict[str, Any]:
        """For /health, /status, /metrics and the STATUS lines: mode, progress, watchers, memory."""
        daemon, indexer = self.daemon, self.daemon.indexer
        reduced = indexer is None or not indexer.info.has_models
        state: dict[str, Any] = {
            "ok": indexer is not None, "pid": os.getpid(), "paused": daemon.paused,
            "mode": "reduced" if reduced else "full",
            "missing": indexer.info.missing if indexer is not None and reduced else "",
            "busy": bool(daemon.scanning) or (indexer is not None and not indexer.pipeline.idle()),
            "last_scan": daemon.last_scan, "progress": daemon.progress(queued), "pull": daemon.pull.state,
            "describe": indexer.describer.status() if indexer is not None and indexer.describer is not None
            else {"enabled": False},
            "ocr": indexer.ocr.status() if indexer is not None and indexer.ocr is not None else {"enabled": False},
            "watch": {root.path: root.as_dict() for root in daemon.watcher.roots.values()},
            "rss": psutil.Process().memory_info().rss,
            "quiet": indexer is not None and indexer.pipeline.quiet(),
        }
        if workers:
            state["workers"] = self._workers()
            state["pss"] = processes_pss(state["workers"].get("pid"))
        return state

    def _workers(self) -> dict[str, Any]:
        """Ask the model worker what it holds; a busy worker answers after its batch, so wait briefly."""
        indexer = self.daemon.indexer
        if indexer is None:
            return {}
        if not getattr(indexer.infer_pool, "alive", True):  # exited while idle: asking would start it again
            return {"pid": None, "rss": 0, "loaded": [], "providers": [], "exited_idle": True}
        try:
            return dict(indexer.infer_pool.schedule(worker_state, (indexer.spec,)).result(timeout=2.0))
        except Exception:  # noqa: BLE001 - busy or restarting: status must not wait for it
            return {}

    def embed_upload(self, data: bytes, name: str, model: tuple[str, Any] | None) -> NDArray[Any]:
        """An uploaded query image: decoded in a decode worker, embedded in the model worker — by `model`
        (folder, transform: the one searches use, which is not the indexing one while a new model re-embeds)."""
        indexer = self.daemon.indexer
        if indexer is None or not indexer.info.has_models:
            raise ModelError("searching by image needs the CLIP model, and pixdex runs without models (reduced mode)")
        transform, spec = indexer.info.transform, indexer.spec
        if model is not None and Path(model[0]) != spec.clip_dir:
            transform = model[1]
            spec = dataclasses.replace(spec, clip_dir=Path(model[0]), tagger_dir=None, clip_tags=None)
        decode = DecodeSpec(transform.size if transform else 224, self.daemon.config.decode.max_pixels, transform, None)
        prepared = indexer.decode_pool.schedule(prepare_query_image, (data, name, decode), timeout=60).result()
        inferred = indexer.infer_pool.schedule(infer, (spec, prepared[None], None), timeout=120).result()
        embedding: NDArray[Any] = inferred.embeddings[0]
        return embedding

    def thumbnail(self, real: bytes, dest: str, pixels: int, max_pixels: int) -> str:
        indexer = self.daemon.indexer
        if indexer is None:
            raise Unavailable("the indexing core is reopening; try again in a moment")
        made: str = indexer.decode_pool.schedule(thumbnails.make_thumbnail, (real, dest, pixels, max_pixels),
                                                 timeout=60).result()
        return made


def processes_pss(model_worker: int | None) -> dict[str, int]:
    """Proportional memory (PSS: shared pages split between their users, so the figures add up) of this
    process and each of its children, by role; a process that ended meanwhile is left out."""
    out: dict[str, int] = {}
    me = psutil.Process()
    decoders = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            pss = int(proc.memory_full_info().pss)
            line = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if proc.pid == me.pid:
            name = "indexing process"
        elif proc.pid == model_worker:
            name = "model worker"
        elif "resource_tracker" in line:
            name = "resource tracker"
        else:
            decoders += 1
            name = f"worker {decoders}"
        out[name] = pss
    return out
