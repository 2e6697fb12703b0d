"""The routes that say how the daemon is: /health, /status, /failures, /metrics, /events (Server-Sent Events
with `Last-Event-ID` resume) and /openapi.json (read once at start: a reinstall under a running daemon
removes the file)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from pixdex.daemon.core_api import Core, Unavailable
from pixdex.daemon.events import Event
from pixdex.daemon.http_api import (
    DIGITS,
    Context,
    as_json,
    bad,
    ctx_of,
    full_access,
    scope,
)
from pixdex.daemon.metrics import CONTENT_TYPE
from pixdex.daemon.stored import failures as stored_failures
from pixdex.daemon.stored import stored_status
from pixdex.indexer.catalog import Catalog
from pixdex.indexer.describe import describer_id
from pixdex.indexer.ocr.identity import reader_id


def add_routes(app: web.Application) -> None:
    app[OPENAPI_DOC] = OPENAPI.read_bytes()  # read once at start: a reinstall under a running daemon removes it
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/failures", failures)
    app.router.add_get("/events", events)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)


OPENAPI = Path(__file__).with_name("openapi.json")


OPENAPI_DOC = web.AppKey("openapi", bytes)


# Handlers -------------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    """Over the socket it also names the data directory it serves: the CLI asks (`brief=1`: without asking the
    indexing process) before anything else, and works on its own data directory when they differ."""
    ctx = ctx_of(request)
    own = {"data_dir": os.path.realpath(ctx.config.data_dir)} if request["token"] is None else {}
    if request.query.get("brief") == "1":
        return as_json({"ok": True, "pid": os.getpid(), **own})
    try:
        state = await asyncio.wrap_future(ctx.core.ask(Core.state, 0, False))
    except Unavailable:
        state = {"ok": False, "mode": "reduced", "paused": False}
    return as_json({"ok": state["ok"], "pid": os.getpid(), "uptime": round(time.time() - ctx.core.started, 1),
                    "mode": state["mode"], "paused": state["paused"], **own})


async def status(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    full_access(request)  # it names every folder and file in flight
    return as_json(await ctx.run(live_status, ctx))


def live_status(ctx: Context) -> dict[str, Any]:
    """Everything `pixdex status` shows: the stored counts plus what the daemon is doing now."""
    daemon = ctx.core
    info = stored_status(ctx.config)
    queued = sum(info["queue"].values())
    try:
        state = daemon.state(queued, workers=True)
    except Unavailable as exc:  # the indexing process is starting again: say so, with what is stored
        state = {"ok": False, "pid": None, "paused": False, "mode": "restarting", "missing": str(exc), "rss": 0,
                 "last_scan": {}, "progress": {"rate": 0.0, "eta_seconds": None, "current": {}, "last_committed": "",
                                               "committed": 0, "failed": 0, "decoded": 0, "inference_calls": 0,
                                               "unchanged_content": 0, "sidecars_read": 0, "from_sidecars": 0,
                                               "sidecar_failures": 0, "scanning": "", "dirty_folders": 0,
                                               "in_flight": 0},
                 "watch": {}, "pull": {}}
    reduced = state["mode"] == "reduced"
    workers = state.get("workers") or {}
    rss = {"daemon": psutil.Process().memory_info().rss, "indexing process": state["rss"]}
    if workers:
        rss["model worker"] = workers["rss"]
    query_models = ctx.service.loaded_models()
    info["daemon"] = {
        "pid": os.getpid(), "indexing_pid": state["pid"], "uptime": round(time.time() - daemon.started, 1),
        "paused": state["paused"], "mode": state["mode"],
        "missing": state["missing"],
        "fix": daemon.model_fix if reduced else "",
        "socket": str(ctx.config.socket_path),
        "tcp": f"127.0.0.1:{ctx.config.server.port}" if ctx.config.server.tcp else "off",
        "last_scan": state["last_scan"],
        "models_pull": state.get("pull", {}),
    }
    info["progress"] = state["progress"]
    info["describe"] = state.get("describe", {"enabled": False})
    if info["describe"].get("enabled"):
        catalog = Catalog(ctx.config.layout.catalog, read_only=True)
        try:
            info["describe"] |= catalog.describe_counts(describer_id(ctx.config.describe))
        finally:
            catalog.close()
    info["ocr"] = state.get("ocr", {"enabled": False})
    if ctx.config.ocr.enabled:
        catalog = Catalog(ctx.config.layout.catalog, read_only=True)
        try:
            info["ocr"] |= catalog.ocr_counts(reader_id(ctx.config.ocr))
        finally:
            catalog.close()
    info["watch"] = list(state["watch"].values())
    info["connections"] = ctx.connections.counts()
    info["collections"] = [c.as_dict() for c in daemon.collections]
    info["loaded_models"] = {"indexing": workers.get("loaded", []), "query": query_models, "rss": rss,
                             "providers": workers.get("providers", [])}
    pss = {"serving process": int(psutil.Process().memory_full_info().pss), **state.get("pss", {})}
    idle = bool(state.get("quiet")) and not queued and not workers.get("loaded") and not query_models
    info["memory"] = {"pss": pss, "total_pss": sum(pss.values()), "idle": idle}
    return info



async def failures(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    rows = await ctx.run(stored_failures, ctx.config)
    allowed = scope(request)
    if allowed is not None:
        rows = [r for r in rows if any(r["path"].startswith(p.rstrip("/") + "/") for p in allowed)]
    return as_json(rows)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events; `Last-Event-ID` (header or `last_event_id`) resumes after that event."""
    ctx = ctx_of(request)
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    last: int | None = None
    if raw is not None:
        if not DIGITS.match(raw):
            raise bad("Last-Event-ID", "Last-Event-ID must be the id of an event this stream sent")
        last = int(raw)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    with contextlib.suppress(ConnectionResetError):  # the client went away: nothing to answer
        await _stream_events(request, ctx, response, last)
    return response


async def _stream_events(request: web.Request, ctx: Context, response: web.StreamResponse, last: int | None) -> None:
    limited = scope(request) is not None
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    after = last if last is not None else ctx.bus.last_id()
    for event in ctx.bus.since(last):
        await _send(response, event, limited)
        after = event.id
    token_id = request.get("token_id")
    quiet_since = time.monotonic()
    while not ctx.stopping.is_set():
        await ctx.bus.wait(after, 15.0 if token_id is None else 2.0)  # a token's stream looks for revocation
        if token_id is not None and not await ctx.run(ctx.tokens.alive, token_id):
            return  # its token was revoked: the stream ends within two seconds
        fresh = ctx.bus.since(after)
        if not fresh:
            if time.monotonic() - quiet_since >= 15.0:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            continue
        quiet_since = time.monotonic()
        for event in fresh:
            await _send(response, event, limited)
            after = event.id


LIMITED_EVENTS = {"progress": ("rate", "eta_seconds", "committed", "failed"), "paused": (), "resumed": (),
                  "reset": ("why",)}


async def _send(response: web.StreamResponse, event: Any, limited: bool) -> None:
    """A limited token sees only counts: no event that names a file or folder."""
    if not limited:
        await response.write(event.sse())
    elif event.kind in LIMITED_EVENTS:
        keep = LIMITED_EVENTS[event.kind]
        await response.write(Event(event.id, event.kind, {k: v for k, v in event.data.items() if k in keep}).sse())


async def metrics(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    full_access(request)
    text = await ctx.run(ctx.metrics.text)
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOC], content_type="application/json")
