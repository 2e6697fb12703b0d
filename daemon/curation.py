"""A person's curation through the daemon, in the indexing process: edits of many items at once (`edit_items`)
and moving an item to the trash (`trash_item`). Single edits are `runtime.Daemon.edit_item`."""

from __future__ import annotations

from typing import Any

from pixdex.daemon.core_api import Unavailable
from pixdex.daemon.runtime import Daemon
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.paths import display_path
from pixdex.indexer.trash import trash_image


def edit_items(daemon: Daemon, ids: list[int], add: list[str], remove: list[str], rating: int | None,
               label: str | None) -> list[dict[str, Any]]:
    """The same edit of each item's sidecar, one after the other; what became of each (`ok`, else `error`)."""
    results: list[dict[str, Any]] = []
    for image_id in ids:
        try:
            daemon.edit_item(image_id, add, remove, None, rating, label)
        except PixdexError as exc:  # SidecarError, Unavailable: this item's, the others go on
            results.append({"id": image_id, "ok": False, "error": str(exc)})
        else:
            results.append({"id": image_id, "ok": True})
    return results


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
