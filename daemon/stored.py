"""What a data directory says without a daemon: `stored_status` and `failures` read the catalog read-only and
load no model. The command line's `status` and `failures` answer with them when no daemon does, and the daemon's
routes answer with them too (with the live part on top)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.layout import CLIP_FILES, STANDIN_MARKER, TAGGER_FILES
from pixdex.indexer.paths import display_path
from pixdex.indexer.settings import Config, default_config_path


def _model_state(directory: Path, marker_files: tuple[str, ...]) -> str:
    if not directory.is_dir():
        return f"absent ({directory})"
    missing = [f for f in marker_files if not (directory / f).is_file()]
    if missing:
        return f"incomplete ({directory}: missing {', '.join(missing)})"
    return "stand-in (meaningless results)" if (directory / STANDIN_MARKER).exists() else "installed"


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
    added: list[tuple[str, bytes]] = []  # `watch add`'s folders
    if layout.exists():
        catalog = Catalog(layout.catalog, read_only=True)
        try:
            counts, queue, generation = catalog.counts(), catalog.queue_counts(), catalog.generation()
            waiting, sidecars = catalog.waiting_for_models(), catalog.sidecar_failures()
            unreadable = catalog.folder_errors()
            added = catalog.collections()
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
                  "models": str(config.model_dir),
                  "folders": ", ".join([*(str(f) for f in config.folders),
                                        *(f"{display_path(p)} (added as {name})" for name, p in added)])},
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


def model_fix(config: Config) -> str:
    """What a person runs (or does) to give pixdex its models: status and the log say it in reduced mode."""
    return (f"`pixdex models pull {config.models.clip}` (from the Hugging Face hub; `pixdex models list` shows the "
            f"choices), or put the model's files into {config.model_dir}: Immich's ONNX exports, `pixdex models "
            "export ARCH --pretrained WEIGHTS` (the export extra), or `pixdex models standin` (the export extra "
            "too) to try pixdex with meaningless stand-ins")
