"""A person's library, opened from the config for the command line: read-only views and reports.

Indexing goes through `pixdex.indexer.core.Indexer`; searching through `open_search`. `status`
and `failures` read the catalog read-only and load no model; none of these create anything in
a data directory that does not exist yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.errors import display_path
from pixdex.indexer.settings import Config, default_config_path

if TYPE_CHECKING:
    from pixdex.query.service import SearchService

CLIP_FILES = ("config.json", "visual/model.onnx", "visual/preprocess_cfg.json", "textual/model.onnx",
              "textual/tokenizer.json")  # as pixdex.indexer.embedder.CLIP_FILES, without importing onnxruntime
TAGGER_FILES = ("model.onnx", "selected_tags.csv")


def open_search(config: Config) -> SearchService:
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


def status(config: Config) -> dict[str, Any]:
    layout = config.layout
    counts = {"pending": 0, "done": 0, "failed": 0}
    queue = {"asked": 0, "new/changed": 0, "backfill": 0}
    generation = 0
    if layout.exists():
        catalog = Catalog(layout.catalog, read_only=True)
        try:
            counts, queue, generation = catalog.counts(), catalog.queue_counts(), catalog.generation()
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
        "models": {
            "clip": {"name": config.models.clip, "state": _model_state(clip_dir, CLIP_FILES),
                     "indexed_with": manifest.get("model")},
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
    finally:
        catalog.close()
    return rows
