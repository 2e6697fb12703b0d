"""The routes that change the library: POST /pause, /resume, /reindex; GET, POST /watches and DELETE
/watches/{name}. Each asks the `Library` (the full token's only)."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from pixdex.daemon.core_api import Core
from pixdex.daemon.http_api import as_json, bad, ctx_of, full_access, json_body, scope
from pixdex.indexer.paths import display_path


def add_routes(app: web.Application) -> None:
    app.router.add_post("/pause", pause)
    app.router.add_post("/resume", resume)
    app.router.add_post("/reindex", reindex)
    app.router.add_get("/watches", watches)
    app.router.add_post("/watches", watch_add)
    app.router.add_delete("/watches/{name}", watch_remove)


async def pause(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    full_access(request)
    await asyncio.wrap_future(ctx.core.ask(Core.pause, True))
    return as_json({"paused": True})


async def resume(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    full_access(request)
    await asyncio.wrap_future(ctx.core.ask(Core.pause, False))
    return as_json({"paused": False})


async def reindex(request: web.Request) -> web.Response:
    """Queue files (or every indexed file under folders) ahead of everything else; none: everything."""
    ctx = ctx_of(request)
    full_access(request)
    body = await json_body(request)
    if set(body) - {"paths"}:
        raise bad(sorted(set(body) - {"paths"})[0], "unknown field; allowed: paths")
    paths = body.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and os.path.isabs(p) for p in paths):
        raise bad("paths", "paths must be a list of absolute paths")
    if len(paths) > 10_000:
        raise bad("paths", "at most 10000 paths per request")
    roots = [c.path for c in ctx.core.collections]
    for path in paths:
        real = os.fsencode(os.path.realpath(path))
        if not any(real == r or real.startswith(r.rstrip(b"/") + b"/") for r in roots):
            raise bad("paths", f"{path} is not in a watched folder; `pixdex watch list` shows them")
    count = await asyncio.wrap_future(ctx.core.ask(Core.reindex, paths))
    return as_json({"queued": count})


async def watches(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    allowed = scope(request)
    shown = [c for c in ctx.core.collections
             if allowed is None or display_path(c.path) in allowed]
    modes = (await asyncio.wrap_future(ctx.core.ask(Core.state, 0, False)))["watch"]
    return as_json([{**c.as_dict(), "watch": modes.get(c.path, {}).get("mode", "off"),
                     "why": modes.get(c.path, {}).get("why", "")} for c in shown])


async def watch_add(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    full_access(request)
    body = await json_body(request)
    path, name = body.get("path"), body.get("name")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise bad("path", "path must be the absolute path of a folder")
    if name is not None and not isinstance(name, str):
        raise bad("name", "name must be a string")
    added = await asyncio.wrap_future(ctx.core.ask(Core.watch_add, path, name))
    return as_json(added, status=201)


async def watch_remove(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    full_access(request)
    removed = await asyncio.wrap_future(ctx.core.ask(Core.watch_remove, request.match_info["name"]))
    return as_json(removed)
