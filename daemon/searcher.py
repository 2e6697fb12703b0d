"""What the desktop's search boxes ask: the daemon's search over its Unix socket, time-boxed.

GNOME Shell and KRunner call a provider on every keystroke and wait for it; one that stalls
stalls the shell. So a query gets `desktop.answer_ms` (200 ms): what the daemon answered by then,
else the results of the longest query already answered that this one extends (what was typed
a letter ago), else nothing — while the request goes on, so the next keystroke finds it answered.
Queries shorter than `desktop.min_query` get nothing at all. Thumbnails for result icons are fetched
the same way and kept in `$XDG_CACHE_HOME/pixdex/desktop-icons`, keyed by the image's id and mtime (an
edited image gets a new icon), at most `MAX_ICONS` of them (the least recently shown go first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import unicodedata
import urllib.parse
from collections import OrderedDict
from pathlib import Path
from typing import Any

import aiohttp

from pixdex.daemon.openpage import launch
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config

log = logging.getLogger(__name__)
KEEP_QUERIES = 64
KEEP_HITS = 2048  # results remembered for the shell's metas and actions
ICON_SIZE = 128
MAX_ICONS = 2000  # about 20 MB of 128-px thumbnails; the least recently shown go first


class Searcher:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.answered: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.hits: dict[str, dict[str, Any]] = {}  # id → the hit, for metas and actions
        self._asked: dict[str, asyncio.Task[list[dict[str, Any]]]] = {}
        self._icons: dict[str, asyncio.Task[Path | None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.icon_dir = config.cache_dir / "desktop-icons"
        self._pruned = False

    @property
    def budget(self) -> float:
        return self.config.desktop.answer_ms / 1000

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.config.socket_path)),
                timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def close(self) -> None:
        for task in [*self._asked.values(), *self._icons.values()]:
            task.cancel()
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str, **params: Any) -> Any:
        async with self._client().get(f"http://localhost{path}", params=params) as response:
            if response.status >= 400:
                raise RuntimeError(f"{path}: HTTP {response.status}: {(await response.text())[:200]}")
            if response.content_type == "application/json":
                return await response.json()
            return await response.read()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        async with self._client().post(f"http://localhost{path}", json=body) as response:
            data = await response.json()
            if response.status >= 400:
                raise RuntimeError(str(data.get("error") or f"HTTP {response.status}"))
            return data

    # Searching -------------------------------------------------------------------------------
    async def search(self, terms: list[str]) -> list[str]:
        """The ids to show for what was typed, within the time budget."""
        query = " ".join(t for t in terms if t).strip()
        if typed_width(query) < self.config.desktop.min_query:
            return []
        task = self._asked.get(query)
        if task is None:
            task = self._asked[query] = asyncio.ensure_future(self._fetch(query))
        try:
            hits = await asyncio.wait_for(asyncio.shield(task), self.budget)
        except TimeoutError:
            hits = self._ready_for(query)
            log.debug("%r: the daemon did not answer within %d ms; %d results of an earlier query",
                      query, self.config.desktop.answer_ms, len(hits))
        except Exception as exc:  # noqa: BLE001 - no daemon, or it refused the query: no results
            log.debug("%r: %s", query, exc)
            hits = []
        return [str(h["id"]) for h in hits]

    async def _fetch(self, query: str) -> list[dict[str, Any]]:
        try:
            found = await self._get("/search", q=query, k=self.config.desktop.results)
            hits: list[dict[str, Any]] = found["hits"]
            for hit in hits:
                self.hits.pop(str(hit["id"]), None)  # to the end: the newest shown go last
                self.hits[str(hit["id"])] = hit
            while len(self.hits) > KEEP_HITS:
                del self.hits[next(iter(self.hits))]
            self.answered[query] = hits
            while len(self.answered) > KEEP_QUERIES:
                self.answered.popitem(last=False)
            return hits
        finally:
            self._asked.pop(query, None)

    def _ready_for(self, query: str) -> list[dict[str, Any]]:
        """The answer to the longest query already answered that `query` extends."""
        best = ""
        for earlier in self.answered:
            if query.startswith(earlier) and len(earlier) > len(best):
                best = earlier
        return self.answered.get(best, []) if best else []

    # Result details ---------------------------------------------------------------------------
    async def icons(self, ids: list[str]) -> dict[str, Path]:
        """Thumbnail files for these results, those ready within the time budget."""
        if not self._pruned:
            self._pruned = True
            asyncio.get_running_loop().run_in_executor(None, prune_icons, self.icon_dir, MAX_ICONS)
        for image_id in ids:
            if image_id not in self._icons and not self._icon_path(image_id).is_file():
                self._icons[image_id] = asyncio.ensure_future(self._fetch_icon(image_id))
        waiting = [self._icons[i] for i in ids if i in self._icons]
        if waiting:
            await asyncio.wait(waiting, timeout=self.budget)
        ready = {}
        for image_id in ids:
            path = self._icon_path(image_id)
            with contextlib.suppress(OSError):
                os.utime(path)  # shown now: the last to go when the cache is pruned
                ready[image_id] = path
        return ready

    def _icon_path(self, image_id: str) -> Path:
        # keyed by the file's mtime too: an image edited since gets a new icon, not the old one
        version = self.hits.get(image_id, {}).get("mtime_ns", 0)
        return self.icon_dir / f"{image_id}-{version}-{ICON_SIZE}.img"

    async def _fetch_icon(self, image_id: str) -> Path | None:
        try:
            path = self._icon_path(image_id)
            data = await self._get(f"/thumbnail/{image_id}", size=ICON_SIZE)
            self.icon_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temp.write_bytes(data)
            os.replace(temp, path)
            for older in self.icon_dir.glob(f"{image_id}-*-{ICON_SIZE}.img"):
                if older != path:
                    older.unlink(missing_ok=True)
            return path
        except Exception as exc:  # noqa: BLE001 - a result without a thumbnail gets a themed icon
            log.debug("no thumbnail for %s: %s", image_id, exc)
            return None
        finally:
            self._icons.pop(image_id, None)

    # Actions -----------------------------------------------------------------------------------
    def path_of(self, image_id: str) -> str | None:
        hit = self.hits.get(image_id)
        return str(hit["path"]) if hit else None

    async def known(self, ids: list[str]) -> list[str]:
        """Those of `ids` that are items: results this process showed, else asked of the daemon (the shell
        may hold ids from before this provider last left), within the time budget."""
        missing = [i for i in ids if i not in self.hits and i.isdigit()]
        if missing:
            async def fetch(image_id: str) -> None:
                with contextlib.suppress(Exception):
                    item = await self._get(f"/items/{image_id}")
                    self.hits[image_id] = {"id": item["id"], "path": item["path"], "mtime_ns": item["mtime_ns"],
                                           "tags": [t["name"] for t in item["tags"]]}
            await asyncio.wait([asyncio.ensure_future(fetch(i)) for i in missing], timeout=self.budget)
        return [i for i in ids if i in self.hits]

    async def page_link(self, next_path: str) -> str:
        """A one-time login link to the web page at `next_path` (the daemon makes it)."""
        ticket = await self._post("/login/ticket", {"next": next_path})
        return str(ticket["url"])

    def open(self, target: str) -> None:
        """Open a file, a folder or a link with `desktop.opener`, detached: the shell must not wait."""
        try:
            launch(self.config, target)
        except (PixdexError, OSError) as exc:
            log.warning("cannot open %s: %s", target, exc)

    async def open_page(self, next_path: str) -> None:
        try:
            self.open(await self.page_link(next_path))
        except Exception as exc:  # noqa: BLE001 - no daemon: say so in the log, the shell goes on
            log.warning("cannot open the web page: %s", exc)


def prune_icons(folder: Path, keep: int) -> int:
    """Delete all but the `keep` icons most recently shown (and temp files a crash left); how many went."""
    try:
        entries = [(e.stat().st_mtime_ns, e.path) for e in os.scandir(folder) if e.is_file()]
    except OSError:
        return 0
    stale = time.time_ns() - 60 * 1_000_000_000  # a temp file younger may be one being written
    temps = [p for t, p in entries if os.path.basename(p).startswith(".") and t < stale]
    icons = sorted((t, p) for t, p in entries if not os.path.basename(p).startswith("."))
    gone = temps + [p for _, p in icons[:max(0, len(icons) - keep)]]
    for path in gone:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return len(gone)


def typed_width(text: str) -> int:
    """How much was typed, in the width terminals give characters: a Korean or Chinese character counts two,
    so `desktop.min_query` = 3 lets 고양 or 빨간 through as it lets "cat" through."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def query_path(terms: list[str]) -> str:
    return "/?" + urllib.parse.urlencode({"q": " ".join(terms)})
