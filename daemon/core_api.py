"""The typed ways into a person's library: `Library`, what the commands ask, and `Core`, what the serving
process asks of the indexing process.

    Library  status · failures · watches · pause · reindex · watch_add · watch_remove
    Core     state · pause · reindex · watch_add · watch_remove · reload · edit_item · edit_items · trash_item ·
             embed_upload · thumbnail

Each command is written once, against `Library`, which has two implementations:

- `DaemonLibrary` (`daemon/remote.py`) when a daemon answers: its HTTP API over the Unix socket, whose routes
  ask the `Core` (`routes_library`, `routes_status`);
- `OfflineLibrary` (`daemon/offline.py`) when none does: the same answers read from, and small changes
  written to, the data directory under its lock. The reads (`stored.stored_status`, `stored.failures`)
  are the ones the daemon's routes answer with too.

`Core` has two: `IndexingCore` (`daemon/indexing_core.py`), the real one in the indexing process, and
`CoreProcess` (`daemon/core_process.py`), the serving process's proxy: a call crosses the pipe as the name
of one of `CALLS` (this table), checked against it, and `IndexingCore`'s method of that name answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pixdex.indexer.errors import PixdexError

if TYPE_CHECKING:  # the command line's client path stays light: no numpy, no settings' loaders
    from numpy.typing import NDArray

    from pixdex.indexer.settings import Config

Status = dict[str, Any]  # `pixdex status --json`, `GET /status`: documented in openapi.json (`Status`)
Failure = dict[str, str]  # path, kind (index | sidecar | folder), reason
Watch = dict[str, Any]  # a collection: name, path, source, and how it is watched


class Unavailable(PixdexError):
    """The daemon cannot do this right now (its indexing core is reopening): try again shortly."""


class Library(Protocol):
    live: bool  # a daemon answers (its scanner and pipeline act on what is asked at once)

    def status(self) -> Status:
        """Counts, queue, models, sizes, paths; with a daemon, what it is doing now."""
        ...

    def failures(self) -> list[Failure]:
        """Files (and folders) that could not be indexed, and sidecars that could not be written."""
        ...

    def watches(self) -> list[Watch]:
        """Every watched folder: the config's and those added with `watch add`."""
        ...

    def pause(self, paused: bool) -> None:
        """Stop (or restart) indexing; remembered across restarts. Queries go on."""
        ...

    def reindex(self, paths: list[str]) -> int:
        """Queue these files (or every indexed file below these folders; none: all) ahead of everything."""
        ...

    def watch_add(self, path: str, name: str | None) -> Watch:
        """Watch another folder as a named collection (`in:NAME`)."""
        ...

    def watch_remove(self, key: str) -> Watch:
        """Stop watching a collection added with `watch add` (by name or path); its images leave the index."""
        ...


class Core(Protocol):
    def pause(self, paused: bool) -> None:
        """As `Library.pause`."""
        ...

    def reindex(self, paths: list[str]) -> int:
        """As `Library.reindex`."""
        ...

    def watch_add(self, path: str, name: str | None) -> Watch:
        """As `Library.watch_add`."""
        ...

    def watch_remove(self, key: str) -> Watch:
        """As `Library.watch_remove`."""
        ...

    def state(self, queued: int = 0, workers: bool = False) -> dict[str, Any]:
        """What the indexing process is doing: mode, pause, progress, watchers, memory (and its workers')."""
        ...

    def reload(self, config: Config) -> dict[str, Any]:
        """A new config (SIGHUP): folders added or removed take effect; other changes reopen the core."""
        ...

    def edit_item(self, image_id: int, add: list[str], remove: list[str], description: str | None,
                  rating: int | None = None, label: str | None = None) -> None:
        """A person's edit: into the sidecar first, then the catalog reads what it says (no model runs). `rating`
        (0–5) → xmp:Rating, `label` → xmp:Label ("": removed); None leaves a field as it is."""
        ...

    def edit_items(self, ids: list[int], add: list[str], remove: list[str], rating: int | None,
                   label: str | None) -> list[dict[str, Any]]:
        """The same edit of many items, each sidecar written as `edit_item` writes it, the catalog and the text index
        changed in one commit; each item's outcome (`{"id", "ok"}`, with `error` when it failed)."""
        ...

    def trash_item(self, image_id: int) -> dict[str, Any]:
        """Move the item's file and its sidecar to the freedesktop trash (never a hard delete) and out of the
        indexes; what was moved. Raises TrashError when it cannot be."""
        ...

    def embed_upload(self, data: bytes, name: str, model: tuple[str, Any] | None) -> NDArray[Any]:
        """An uploaded query image's embedding by `model` (folder, transform), decoded and embedded in workers."""
        ...

    def thumbnail(self, real: bytes, dest: str, pixels: int, max_pixels: int) -> str:
        """Make a thumbnail of `real` at `dest` (in a decode worker); returns where it is."""
        ...


# The pipe's method table: a call crosses it as the name of one of these, checked against this table.
CALLS: dict[str, Callable[..., Any]] = {method.__name__: method for method in (
    Core.pause, Core.reindex, Core.watch_add, Core.watch_remove, Core.state, Core.reload, Core.edit_item,
    Core.edit_items, Core.trash_item, Core.embed_upload, Core.thumbnail)}
