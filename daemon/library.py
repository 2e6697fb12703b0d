"""A person's indexed library, opened from the config: models + stores, for indexing or searching.

`IndexSession` and `SearchSession` are context managers that load what they need and close the
catalog on exit; `status` and `failures` read the catalog without loading any model.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tqdm import tqdm

from pixdex.daemon.config import Config, default_config_path
from pixdex.indexer.catalog import Catalog
from pixdex.indexer.embedder import ClipModel
from pixdex.indexer.errors import ModelError, PixdexError, display_path
from pixdex.indexer.pipeline import Pipeline, RunStats, load_models
from pixdex.indexer.writer import Stores, open_stores
from pixdex.query.service import SearchService


def catalog_path(config: Config) -> Path:
    return config.data_dir / "catalog.sqlite3"


class _Session:
    stores: Stores

    def __enter__(self) -> Any:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stores.catalog.close()


class IndexSession(_Session):
    """Exclusive: one indexer per data directory (tantivy and the writer allow no second one)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.models = load_models(config)
        self._lock = _lock_data_dir(config.data_dir)
        self.stores = open_stores(config.data_dir, self.models.clip.id, self.models.clip.dim, config.index)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        super().__exit__(kind, exc, tb)
        self._lock.close()

    def index(self, roots: list[Path], progress: bool = False) -> RunStats:
        bar = tqdm(total=0, unit="img", disable=not (progress and os.isatty(2)), leave=False, desc="indexing")

        def report(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            return Pipeline(self.config, self.models, self.stores, report).run(roots)
        finally:
            bar.close()


class SearchSession(_Session):
    def __init__(self, config: Config) -> None:
        self.config = config
        clip = ClipModel(config.model_dir / "clip" / config.models.clip, config.models.threads)
        self.stores = open_stores(config.data_dir, clip.id, clip.dim, config.index, read_only=True)
        self.service = SearchService(config, self.stores, clip)


def _lock_data_dir(data_dir: Path) -> IO[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "index.lock", "a+")  # noqa: SIM115 - held until the session ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise PixdexError(f"{data_dir}: already being indexed by pid {holder}; wait for it to finish") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _model_state(directory: Path, marker_files: tuple[str, ...]) -> str:
    if not directory.is_dir():
        return f"absent ({directory})"
    missing = [f for f in marker_files if not (directory / f).is_file()]
    if missing:
        return f"incomplete ({directory}: missing {', '.join(missing)})"
    return "stand-in (meaningless results)" if (directory / "STANDIN.txt").exists() else "installed"


def status(config: Config) -> dict[str, Any]:
    from pixdex.indexer.embedder import CLIP_FILES
    from pixdex.indexer.tagger import TAGGER_FILES

    catalog_file = catalog_path(config)
    counts = {"pending": 0, "done": 0, "failed": 0}
    if catalog_file.exists():
        catalog = Catalog(catalog_file)
        counts = catalog.counts()
        catalog.close()
    vectors = config.data_dir / "vectors"
    manifest = {}
    if (vectors / "vectors.json").exists():
        manifest = json.loads((vectors / "vectors.json").read_text())
    fulltext = config.data_dir / "fulltext"
    sizes = {
        "catalog": sum(p.stat().st_size for p in config.data_dir.glob("catalog.sqlite3*")) if config.data_dir.exists() else 0,
        "vector index": (vectors / "vectors.usearch").stat().st_size if (vectors / "vectors.usearch").exists() else 0,
        "text index": sum(p.stat().st_size for p in fulltext.iterdir() if p.is_file()) if fulltext.exists() else 0,
    }
    clip_dir = config.model_dir / "clip" / config.models.clip
    tagger_dir = config.model_dir / "tagger" / config.models.tagger
    return {
        "counts": counts,
        "models": {
            "clip": {"name": config.models.clip, "state": _model_state(clip_dir, CLIP_FILES),
                     "indexed_with": manifest.get("model")},
            "tagger": {"name": config.models.tagger,
                       "state": _model_state(tagger_dir, TAGGER_FILES) if config.models.tagger else "disabled"},
        },
        "sizes": sizes,
        "paths": {"config": str(default_config_path(config.environ)), "data": str(config.data_dir),
                  "models": str(config.model_dir), "folders": ", ".join(str(f) for f in config.folders)},
    }


def failures(config: Config) -> list[dict[str, str]]:
    if not catalog_path(config).exists():
        return []
    catalog = Catalog(catalog_path(config))
    try:
        rows = [{"path": display_path(r.path), "kind": "index", "reason": r.reason or ""}
                for r in catalog.with_state("failed")]
        rows += [{"path": display_path(r.path), "kind": "sidecar", "reason": r.sidecar_error or ""}
                 for r in catalog.with_sidecar_errors()]
    finally:
        catalog.close()
    return rows


__all__ = ["IndexSession", "ModelError", "SearchSession", "failures", "status"]
