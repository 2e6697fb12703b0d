"""A person's curation through the daemon, in the indexing process: edits of many items at once (`edit_items`: every
sidecar written, then one commit) and moving an item to the trash (`trash_item`). Single edits are
`runtime.Daemon.edit_item`."""

from __future__ import annotations

import os
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pebble import ProcessExpired

from pixdex.daemon.core_api import Unavailable
from pixdex.daemon.runtime import Daemon
from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import ImageRow
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.paths import display_path
from pixdex.indexer.pools import exit_reason
from pixdex.indexer.sidecars.state import SidecarState
from pixdex.indexer.sidecars.tasks import edit_sidecar, identity
from pixdex.indexer.trash import trash_image


def edit_items(daemon: Daemon, ids: list[int], add: list[str], remove: list[str], rating: int | None,
               label: str | None) -> list[dict[str, Any]]:
    """The same edit of each item's sidecar, each written as a single edit writes it (`edit_sidecar`, several at once
    in the decode pool), then what they all say now into the catalog in one writer transaction — one commit, one
    text-index commit. What became of each, in the order of `ids`: `ok`, else the `error` that stopped it (gone, its
    sidecar not writable faithfully, …); one item's failure leaves the others' edits standing."""
    indexer = daemon.indexer
    if indexer is None:
        raise Unavailable("the indexing core is reopening; try again in a moment")
    catalog = Catalog(daemon.config.layout.catalog, read_only=True)
    try:
        rows = catalog.get_many(ids)
    finally:
        catalog.close()
    failed = {i: f"item {i} is gone" for i in ids if i not in rows}
    spec = indexer.pipeline.sidecar_spec()
    written: list[tuple[ImageRow, SidecarState]] = []
    with indexer.pipeline.sidecar_io:  # no move carried nor pipeline write to these sidecars meanwhile
        jobs: dict[int, Future[SidecarState]] = {}
        for image_id in [i for i in ids if i in rows]:
            row = rows[image_id]
            if not os.path.lexists(row.path):
                failed[image_id] = f"{display_path(row.path)} has just moved or gone; try again in a moment"
                continue
            jobs[image_id] = indexer.decode_pool.schedule(
                edit_sidecar, (row.path, add, remove, None, spec, rating, label, identity(row)), timeout=60)
        for image_id, job in jobs.items():
            try:
                side = job.result()
            except PixdexError as exc:  # SidecarError: this one's sidecar stays as it was
                failed[image_id] = f"the sidecar was not changed: {exc}"
            except ProcessExpired as exc:
                failed[image_id] = f"the sidecar process died on it ({exit_reason(exc.exitcode)})"
            except FutureTimeout:
                failed[image_id] = "writing its sidecar took longer than 60 s"
            else:  # at once: a scan meanwhile does not take pixdex's write for a person's edit
                indexer.pipeline.remember_own(rows[image_id].path, side)
                written.append((rows[image_id], side))
    if written:
        done = indexer.writer.sidecars_read([(row.id, side) for row, side in written])
        indexer.writer.flush()
        done.result()
    for row, _side in written:
        daemon.bus.publish("indexed", id=row.id, path=display_path(row.path), edited=True)
    return [{"id": i, "ok": False, "error": failed[i]} if i in failed else {"id": i, "ok": True} for i in ids]


def trash_item(daemon: Daemon, image_id: int) -> dict[str, Any]:
    """Move the item's file and its sidecar to the trash and take it out of the indexes at once. Raises TrashError
    when the file cannot be moved (then nothing changes)."""
    indexer = daemon.indexer
    if indexer is None:
        raise Unavailable("the indexing core is reopening; try again in a moment")
    row = daemon.row(image_id)
    with indexer.pipeline.sidecar_io:  # no sidecar write to it meanwhile, no carry of it along a move
        moved = trash_image(row.path, indexer.pipeline.sidecar_spec().naming)
    done = indexer.writer.register([], [], [], [], [row])  # the sidecar went along: nothing to drop
    indexer.writer.flush()
    done.result()
    daemon.bus.publish("removed", count=1, why="moved to the trash", id=image_id, path=display_path(row.path))
    return {"id": image_id, "path": display_path(row.path), "trashed": [display_path(p) for p in moved]}
