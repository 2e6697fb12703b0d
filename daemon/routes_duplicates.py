"""GET /duplicates: groups of copies and near-copies of one photo, each with the copy to keep and why
(`query.duplicates`), among the images the caller may see; computed on the query threads from the catalog's
perceptual hashes."""

from __future__ import annotations

from aiohttp import web

from pixdex.daemon.http_api import as_json, ctx_of, int_param, scope, text_param
from pixdex.daemon.routes_search import cwd_of
from pixdex.query.duplicates import DEFAULT_BITS, MAX_BITS, Limits, duplicates


def add_routes(app: web.Application) -> None:
    app.router.add_get("/duplicates", find_duplicates)


async def find_duplicates(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    filters = text_param(request, "q", ctx.config.server.max_query_chars, required=False)
    limits = Limits(bits=int_param(request, "threshold", DEFAULT_BITS, 0, MAX_BITS))
    similar = request.query.get("similar") == "1"
    found = await ctx.run(duplicates, ctx.service, filters, limits, similar, cwd_of(request), scope(request))
    return as_json(found)
