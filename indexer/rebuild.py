"""`pixdex rebuild`: the catalog and both indexes again, built aside and swapped in only once complete.

The new stores are built in ``<data_dir>/rebuild-<stamp>.partial/`` while the old ones stay in place
(and searchable); image ids are carried over from the old catalog by path. Only when the build
finished are the old stores moved to ``before-rebuild-<stamp>/`` and the new ones moved in. The swap
is a few renames, written down first in ``rebuild-swap.json``: a crash in the middle is finished the
next time anything opens the data directory for writing (`finish_swap`), so the directory never
ends up without a catalog. A build that fails or is interrupted leaves the old stores untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from pixdex.indexer.files import atomic_write
from pixdex.indexer.layout import Layout

log = logging.getLogger(__name__)

MARKER = "rebuild-swap.json"


@dataclass(frozen=True)
class Previous:
    """What a rebuild keeps of the old catalog: the folders added with `watch add` and every image's id."""

    collections: list[tuple[str, bytes]]
    ids: dict[bytes, int]


def previous(layout: Layout) -> Previous:
    """Read what the old catalog knows (nothing when it is missing or unreadable: the rebuild starts afresh)."""
    if not layout.exists():
        return Previous([], {})
    try:
        db = sqlite3.connect(f"file:{layout.catalog}?mode=ro", uri=True)
    except sqlite3.Error:
        return Previous([], {})
    try:
        try:
            added = [(str(n), bytes(p)) for n, p in db.execute("SELECT name, path FROM collections")]
        except sqlite3.Error:
            added = []  # a catalog from before collections
        try:
            ids = {bytes(p): int(i) for i, p in db.execute("SELECT id, path FROM images")}
        except sqlite3.Error:
            ids = {}
    finally:
        db.close()
    return Previous(added, ids)


def stores(layout: Layout) -> list[Path]:
    """What a rebuild replaces: the catalog (with its WAL), the text index, the vector index."""
    return [*layout.catalog_files(), layout.fulltext, layout.vectors]


def swap_in(layout: Layout, built: Layout, aside: Path) -> None:
    """Move the old stores to `aside` and the ones in `built` into place (see the module's docstring). The
    built catalog's WAL is emptied into it first, so the catalog file alone holds everything."""
    db = sqlite3.connect(built.catalog)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    atomic_write(layout.root / MARKER, json.dumps({"built": str(built.root), "aside": str(aside)}).encode())
    finish_swap(layout)


def finish_swap(layout: Layout) -> bool:
    """Finish a swap that a crash cut short (or do the one `swap_in` wrote down), then remove what builds that
    were cut short left (``rebuild-*.partial/``: the lock is held, so none is being built); True if there was a
    swap to finish."""
    finished = _finish_swap(layout)
    for stale in layout.root.glob("rebuild-*.partial"):
        log.info("rebuild: removing %s, left by a rebuild that was cut short", stale)
        shutil.rmtree(stale, ignore_errors=True)
    return finished


def _finish_swap(layout: Layout) -> bool:
    marker = layout.root / MARKER
    try:
        plan = json.loads(marker.read_text())
        built, aside = Layout(Path(plan["built"])), Path(plan["aside"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("%s is unreadable (%s); the rebuild it describes is left as it is", marker, exc)
        return False
    aside.mkdir(parents=True, exist_ok=True)
    if built.catalog.exists():  # the new catalog not moved in yet: old stores may still be in place
        for path in stores(layout):
            if os.path.lexists(path):
                os.replace(path, aside / path.name)
    for path in stores(built):
        if os.path.lexists(path):
            os.replace(path, layout.root / path.name)
    shutil.rmtree(built.root, ignore_errors=True)
    marker.unlink()
    with contextlib.suppress(OSError):
        aside.rmdir()  # there was nothing before
    log.info("rebuild: the new catalog and indexes are in place; the previous ones are in %s", aside)
    return True
