"""A person's library without a daemon: `OfflineLibrary`, the command line's `Library` when none answers.

`stored_status` and `failures` read the catalog read-only and load no model (the daemon's routes answer
with them too); the changes — pause, reindex, watch add and remove — are small writes under the data
directory's lock, as a daemon or an index run holds it. Searching goes through `open_search`. Nothing here
creates anything in a data directory that does not exist yet, but for a change a person asks for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import ASKED
from pixdex.indexer.collections import all_collections, plan_add, removable
from pixdex.indexer.paths import display_path
from pixdex.indexer.settings import Config, default_config_path

if TYPE_CHECKING:
    from pixdex.query.service import SearchService

CLIP_FILES = ("config.json", "visual/model.onnx", "visual/preprocess_cfg.json", "textual/model.onnx",
              "textual/tokenizer.json")  # as pixdex.indexer.embedder.CLIP_FILES, without importing onnxruntime
TAGGER_FILES = ("model.onnx", "selected_tags.csv")


def open_search(config: Config) -> SearchService:
    # Late: the query side (numpy, tantivy, usearch) loads for searching only — `status` and `failures` stay light.
    from pixdex.query.reader import Reader
    from pixdex.query.service import SearchService

    return SearchService(config, Reader(config.layout, config.index))


def _model_state(directory: Path, marker_files: tuple[str, ...]) -> str:
    if not directory.is_dir():
        return f"absent ({directory})"
    missing = [f for f in marker_files if not (directory / f).is_file()]
    if missing:
        return f"incomplete ({directory}: missing {', '.join(missing)})"
    return "stand-in (meaningless results)" if (directory / "STANDIN.txt").exists() else "installed"


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def stored_status(config: Config) -> dict[str, Any]:
    """What `pixdex status` says of the data directory, without a daemon's live part."""
    layout = config.layout
    counts = {"pending": 0, "done": 0, "failed": 0}
    queue = {"asked": 0, "new/changed": 0, "backfill": 0}
    generation = waiting = sidecars = 0
    unreadable: list[tuple[bytes, str]] = []
    live: str | None = None
    switch: dict[str, Any] | None = None
    if layout.exists():
        catalog = Catalog(layout.catalog, read_only=True)
        try:
            counts, queue, generation = catalog.counts(), catalog.queue_counts(), catalog.generation()
            waiting, sidecars = catalog.waiting_for_models(), catalog.sidecar_failures()
            unreadable = catalog.folder_errors()
            live = catalog.live_model()
            if live is not None and live.rsplit("@", 1)[0] != config.models.clip:
                switch = {"from": live.rsplit("@", 1)[0], "to": config.models.clip,
                          "left": catalog.old_vectors_left(live, config.models.clip)}
        finally:
            catalog.close()
    manifest: dict[str, Any] = {}
    if layout.vector_manifest.exists():
        manifest = json.loads(layout.vector_manifest.read_text())
    clip_dir = config.model_dir / "clip" / config.models.clip
    tagger_dir = config.model_dir / "tagger" / config.models.tagger
    return {
        "counts": counts,
        "queue": queue,
        "generation": generation,
        "waiting_for_models": waiting,
        "sidecar_failures": sidecars,
        # Folders the last scan could not read: what is below them stays as it was until they can be read again.
        "unreadable_folders": [{"path": display_path(p), "reason": r} for p, r in unreadable],
        "models": {
            "clip": {"name": config.models.clip, "state": _model_state(clip_dir, CLIP_FILES),
                     "indexed_with": manifest.get("model"), "live": live, "reembedding": switch},
            "tagger": {"name": config.models.tagger,
                       "state": _model_state(tagger_dir, TAGGER_FILES) if config.models.tagger else "disabled"},
        },
        "sizes": {
            "catalog": _size(layout.catalog_files()),
            "vector index": _size([layout.vector_file]),
            "text index": _size(list(layout.fulltext.iterdir())) if layout.fulltext.is_dir() else 0,
        },
        "paths": {"config": str(config.source) if config.source else
                  f"{default_config_path(config.environ)} (absent: built-in defaults)", "data": str(config.data_dir),
                  "models": str(config.model_dir), "folders": ", ".join(str(f) for f in config.folders)},
    }


def failures(config: Config) -> list[dict[str, str]]:
    if not config.layout.exists():
        return []
    catalog = Catalog(config.layout.catalog, read_only=True)
    try:
        rows = [{"path": display_path(r.path), "kind": "index", "reason": r.reason or ""}
                for r in catalog.with_state("failed")]
        rows += [{"path": display_path(r.path), "kind": "sidecar", "reason": r.sidecar_error or ""}
                 for r in catalog.with_sidecar_errors()]
        rows += [{"path": display_path(p), "kind": "folder", "reason": f"{reason}; what is below it is kept as it "
                  "was and scanned again once it can be read"} for p, reason in catalog.folder_errors()]
    finally:
        catalog.close()
    return rows


# Without a daemon: small writes under the data directory's lock ---------------------------------
def offline_write(config: Config, change: Any) -> Any:
    """Run `change(catalog)` in one transaction while holding the lock a daemon or indexer would hold."""
    from pixdex.indexer.core import lock_data_dir  # late: see `offline_watch_remove`

    lock = lock_data_dir(config.layout.root, config.layout.lock)
    try:
        catalog = Catalog(config.layout.catalog)
        try:
            with catalog.transaction():
                return change(catalog)
        finally:
            catalog.close()
    finally:
        lock.close()


def offline_reindex(config: Config, paths: list[Path]) -> int:

    def queue(catalog: Catalog) -> int:
        roots = paths or [c.fspath for c in all_collections(config, catalog)]
        ids = {row.id for row in catalog.under_paths(roots)}
        for image_id in ids:
            catalog.enqueue(image_id, ASKED, "asked for")
        return len(ids)

    return int(offline_write(config, queue))


def watched(config: Config) -> list[Any]:
    """Every watched folder (collection): the config file's and those added with `watch add`."""
    catalog = Catalog(config.layout.catalog, read_only=True) if config.layout.exists() else None
    try:
        return all_collections(config, catalog)
    finally:
        if catalog is not None:
            catalog.close()


def offline_watches(config: Config) -> list[dict[str, str]]:
    return [{**c.as_dict(), "watch": "off (no daemon runs)", "why": ""} for c in watched(config)]


def offline_watch_add(config: Config, path: Path, name: str | None) -> dict[str, str]:
    def add(catalog: Catalog) -> dict[str, str]:
        added, inside = plan_add(all_collections(config, catalog), path, name)
        for c in inside:
            catalog.remove_collection(c.name)
        catalog.add_collection(added.name, added.path)
        return added.as_dict()

    return dict(offline_write(config, add))


def offline_watch_remove(config: Config, key: str) -> dict[str, Any]:
    def remove(catalog: Catalog) -> dict[str, Any]:
        found = removable(all_collections(config, catalog), key, config.source)
        catalog.remove_collection(found.name)
        return {**found.as_dict(), "forgotten": 0}

    removed = dict(offline_write(config, remove))
    from pixdex.indexer.core import (
        Indexer,  # late: the indexing core loads for this one change only
    )

    with Indexer(config, reduced_ok=True) as indexer:  # its images leave the index now, as the daemon does
        removed["forgotten"] = indexer.forget([Path(removed["path"])])
    return removed


class OfflineLibrary:
    """`Library` over the data directory itself (no daemon runs)."""

    live = False

    def __init__(self, config: Config) -> None:
        self.config = config

    def status(self) -> dict[str, Any]:
        return stored_status(self.config)

    def failures(self) -> list[dict[str, str]]:
        return failures(self.config)

    def watches(self) -> list[dict[str, Any]]:
        return offline_watches(self.config)

    def pause(self, paused: bool) -> None:
        offline_write(self.config, lambda catalog: catalog.set_meta("paused", int(paused)))

    def reindex(self, paths: list[str]) -> int:
        return offline_reindex(self.config, [Path(p) for p in paths])

    def watch_add(self, path: str, name: str | None) -> dict[str, Any]:
        return offline_watch_add(self.config, Path(path), name)

    def watch_remove(self, key: str) -> dict[str, Any]:
        return offline_watch_remove(self.config, key)
