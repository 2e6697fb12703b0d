"""`pixdex dbus`: pixdex's results in the desktop's own search, on the session bus (dbus-fast).

One process owns the well-known name `org.pixdex.Search` and serves two interfaces:

- GNOME Shell's `org.gnome.Shell.SearchProvider2` at /org/pixdex/Search/GnomeShell (results with
  thumbnails as `gicon`; activating one opens the image, "more results" opens the web page);
- KRunner's `org.kde.krunner1` at /org/pixdex/Search/KRunner (matches with actions: open, open the
  folder, find similar images).

Both answer from the running daemon over its Unix socket, time-boxed (`pixdex.daemon.searcher`).
The D-Bus `.service` file that `pixdex integrate install` writes runs this command, so the first
search starts it; it leaves after ten idle minutes and is started again by the next one.

No `from __future__ import annotations` here: dbus-fast reads the D-Bus signatures from the methods'
annotations ("as", "aa{sv}", …) as they are written.
"""

import asyncio
import contextlib
import logging
import os
import signal
import time
import urllib.parse
from typing import Annotated, Any

from dbus_fast import BusType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.service import ServiceInterface, method

from pixdex.daemon.searcher import Searcher, query_path
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config

# The D-Bus signatures of the methods' arguments and results, as dbus-fast reads them.
Strings = Annotated[list[str], DBusSignature("as")]
Text = Annotated[str, DBusSignature("s")]
Time = Annotated[int, DBusSignature("u")]
Metas = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
RunnerActions = Annotated[list[list[str]], DBusSignature("a(sss)")]
Matches = Annotated[list[list[Any]], DBusSignature("a(sssida{sv})")]

log = logging.getLogger(__name__)
BUS_NAME = "org.pixdex.Search"
GNOME_PATH = "/org/pixdex/Search/GnomeShell"
KRUNNER_PATH = "/org/pixdex/Search/KRunner"
IDLE_EXIT = 600.0
POSSIBLE_MATCH = 30  # KRunner's QueryMatch::Type: a search result, not an exact hit
ACTIONS = [("open-folder", "Open the containing folder", "document-open-folder"),
           ("similar", "Find similar images", "edit-find")]


class Activity:
    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


def _name(path: str) -> str:
    return os.path.basename(path) or path


def _folder(path: str) -> str:
    home = os.path.expanduser("~")
    folder = os.path.dirname(path)
    return "~" + folder[len(home):] if folder == home or folder.startswith(home + "/") else folder


class GnomeShellProvider(ServiceInterface):
    def __init__(self, searcher: Searcher, activity: Activity) -> None:
        super().__init__("org.gnome.Shell.SearchProvider2")
        self.searcher = searcher
        self.activity = activity

    @method()
    async def GetInitialResultSet(self, terms: Strings) -> Strings:
        self.activity.touch()
        return await self.searcher.search(terms)

    @method()
    async def GetSubsearchResultSet(self, previous_results: Strings, terms: Strings) -> Strings:
        self.activity.touch()
        return await self.searcher.search(terms)

    @method()
    async def GetResultMetas(self, identifiers: Strings) -> Metas:
        self.activity.touch()
        known = await self.searcher.known(identifiers)
        icons = await self.searcher.icons(known)
        metas = []
        for image_id in known:
            path = self.searcher.path_of(image_id) or ""
            hit = self.searcher.hits.get(image_id, {})
            tags = ", ".join(str(t) for t in hit.get("tags", [])[:6])
            meta = {"id": Variant("s", image_id), "name": Variant("s", _name(path)),
                    "description": Variant("s", _folder(path) + (f" — {tags}" if tags else "")),
                    "clipboardText": Variant("s", path)}
            meta["gicon"] = Variant("s", str(icons[image_id]) if image_id in icons else "image-x-generic")
            metas.append(meta)
        return metas

    @method()
    async def ActivateResult(self, identifier: Text, terms: Strings, timestamp: Time) -> None:
        self.activity.touch()
        if await self.searcher.known([identifier]):
            self.searcher.open(self.searcher.path_of(identifier) or "")

    @method()
    async def LaunchSearch(self, terms: Strings, timestamp: Time) -> None:
        self.activity.touch()
        await self.searcher.open_page(query_path(terms))


class KRunner(ServiceInterface):
    def __init__(self, searcher: Searcher, activity: Activity) -> None:
        super().__init__("org.kde.krunner1")
        self.searcher = searcher
        self.activity = activity

    @method()
    def Actions(self) -> RunnerActions:
        return [list(a) for a in ACTIONS]

    @method()
    async def Match(self, query: Text) -> Matches:
        self.activity.touch()
        ids = await self.searcher.search([query])
        matches = []
        for rank, image_id in enumerate(ids):
            path = self.searcher.path_of(image_id) or ""
            properties = {"subtext": Variant("s", _folder(path)), "category": Variant("s", "Images"),
                          "urls": Variant("as", ["file://" + urllib.parse.quote(path)]),
                          "actions": Variant("as", [a[0] for a in ACTIONS])}
            relevance = max(0.1, 1.0 - rank / max(1, len(ids)))
            matches.append([image_id, _name(path), "image-x-generic", POSSIBLE_MATCH, relevance, properties])
        return matches

    @method()
    async def Run(self, matchId: Text, actionId: Text) -> None:
        self.activity.touch()
        if not await self.searcher.known([matchId]):
            return
        path = self.searcher.path_of(matchId) or ""
        if actionId == "open-folder":
            self.searcher.open(os.path.dirname(path))
        elif actionId == "similar":
            await self.searcher.open_page(f"/?similar={matchId}")
        else:
            self.searcher.open(path)

    @method()
    def Teardown(self) -> None:
        self.searcher.answered.clear()


async def serve_bus(config: Config, idle_exit: float = IDLE_EXIT) -> None:
    searcher = Searcher(config)
    activity = Activity()
    try:
        bus = await MessageBus(bus_type=BusType.SESSION).connect()
    except Exception as exc:  # noqa: BLE001 - no session bus: one clear line
        raise PixdexError(f"cannot reach the session bus ({exc}); `pixdex dbus` runs inside a desktop session "
                          "(DBUS_SESSION_BUS_ADDRESS)") from None
    bus.export(GNOME_PATH, GnomeShellProvider(searcher, activity))
    bus.export(KRUNNER_PATH, KRunner(searcher, activity))
    from dbus_fast import RequestNameReply

    reply = await bus.request_name(BUS_NAME)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        bus.disconnect()
        raise PixdexError(f"{BUS_NAME} is already served on this bus (another `pixdex dbus`)")
    log.info("serving %s on the session bus (GNOME Shell at %s, KRunner at %s)", BUS_NAME, GNOME_PATH, KRUNNER_PATH)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    disconnected = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]  # dbus-fast
    try:
        while not stop.is_set() and not disconnected.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            if idle_exit and time.monotonic() - activity.last > idle_exit:
                log.info("idle for %.0f s: leaving (the next search starts it again)", idle_exit)
                break
    finally:
        await searcher.close()
        bus.disconnect()


def run(config: Config, idle_exit: float = IDLE_EXIT) -> int:
    asyncio.run(serve_bus(config, idle_exit))
    return 0
