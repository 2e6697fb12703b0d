"""GET /timeline: the images the caller may see by the date they were taken (else the file's time), newest first,
for the web page's timeline (month headings, a jump to each year)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from pixdex.daemon.http_api import as_json, ctx_of, int_param
from pixdex.daemon.routes_items import inside, visible_roots
from pixdex.indexer.paths import display_path

MAX_ITEMS = 20_000


def add_routes(app: web.Application) -> None:
    app.router.add_get("/timeline", timeline)


async def timeline(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    limit = int_param(request, "k", 5000, 1, MAX_ITEMS)
    return as_json(await ctx.run(_timeline, request, limit))


def _timeline(request: web.Request, limit: int) -> dict[str, Any]:
    reader = ctx_of(request).service.reader
    if not reader.exists():
        return {"items": [], "more": False}
    roots = visible_roots(request)
    rows = reader.catalog().by_date(limit + 1)
    items = [{"id": image_id, "path": display_path(path), "mtime_ns": mtime_ns, "date": _date(taken, mtime_ns)}
             for image_id, path, taken, mtime_ns in rows[:limit] if inside(path, roots)]
    return {"items": items, "more": len(rows) > limit}


def _date(taken: str | None, mtime_ns: int) -> str:
    """The day it was taken (YYYY-MM-DD), else the file's."""
    if taken and len(taken) >= 10:
        return taken[:10]
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC).date().isoformat() if mtime_ns > 0 else \
        datetime.fromtimestamp(0, tz=UTC).date().isoformat()

