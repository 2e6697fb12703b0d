"""A person's library without a daemon: `OfflineLibrary`, the command line's `Library` when none answers.

What it says of the data directory comes from `stored` (the daemon's routes answer with it too); the changes —
pause, reindex, watch add and remove — are small writes under the data directory's lock, as a daemon or an index
run holds it. Searching goes through `open_search`. Nothing here creates anything in a data directory that does
not exist yet, but for a change a person asks for. The serving process never loads this module.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixdex.daemon.stored import failures, stored_status
from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import ASKED
from pixdex.indexer.collections import all_collections, plan_add, removable
from pixdex.indexer.settings import Config

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from pixdex.query.service import SearchService

def open_search(config: Config) -> SearchService:
    # Late: the query side (numpy, tantivy, usearch) loads for searching only — `status` and `failures` stay light.
    from pixdex.query.reader import Reader
    from pixdex.query.service import SearchService

    return SearchService(config, Reader(config.layout, config.index), partial(_embed_file, config))


def _embed_file(config: Config, clip: Any, path: Path) -> NDArray[np.float32]:
    # Late: Pillow loads only when the query is an image file that is not indexed.
    from pixdex.query.image_query import embed_file

    return embed_file(config, clip, path)


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
        added = plan_add(all_collections(config, catalog), path, name)
        catalog.add_collection(added.name, added.path)
        return added.as_dict()

    return dict(offline_write(config, add))


def offline_watch_remove(config: Config, key: str) -> dict[str, Any]:
    still: list[bytes] = []  # the folders watched after it

    def remove(catalog: Catalog) -> dict[str, Any]:
        found = removable(all_collections(config, catalog), key, config.source)
        catalog.remove_collection(found.name)
        still.extend(c.path for c in all_collections(config, catalog))
        return {**found.as_dict(), "forgotten": 0}

    removed = dict(offline_write(config, remove))
    from pixdex.indexer.core import (
        Indexer,  # late: the indexing core loads for this one change only
    )

    with Indexer(config, reduced="if unloadable") as indexer:  # its images leave the index now, as the daemon does
        removed["forgotten"] = indexer.forget([Path(removed["path"])], still)
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
