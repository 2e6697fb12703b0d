"""The search routes: GET /search (a query string), POST /search (uploaded images and/or text, with
weights) and GET /similar (indexed images by id or path). Searching runs on the query threads; an
uploaded image is decoded and embedded in the indexing process's workers."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from pixdex.daemon.core_api import Core
from pixdex.daemon.http_api import (
    DIGITS,
    MAX_ID,
    ApiError,
    Context,
    as_json,
    bad,
    bounded_int,
    ctx_of,
    int_param,
    scope,
    text_param,
)
from pixdex.daemon.routes_items import inside, row_by_path, visible_roots, visible_row
from pixdex.indexer.errors import ModelError
from pixdex.indexer.paths import display_path
from pixdex.query.parse import QueryError
from pixdex.query.service import MAX_K, Results


def add_routes(app: web.Application) -> None:
    app.router.add_get("/search", search)
    app.router.add_post("/search", search_upload)
    app.router.add_get("/similar", similar)


IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/heic",
               "image/heif", "image/avif"}


def results_json(results: Results, raw: bool) -> dict[str, Any]:
    data = results.as_dict()
    if raw:  # the exact path bytes, for `pixdex search -0` through the daemon
        for hit, out in zip(results.hits, data["hits"], strict=True):
            out["path_b64"] = base64.b64encode(hit.raw_path).decode()
    return data


async def search(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    q = text_param(request, "q", ctx.config.server.max_query_chars)
    k = int_param(request, "k", ctx.config.search.k, 1, MAX_K)
    cwd = cwd_of(request)
    results = await ctx.run(ctx.service.search, q, k, cwd, scope(request))
    return as_json(results_json(results, request.query.get("raw") == "1"))


def cwd_of(request: web.Request) -> Path | None:
    """The caller's folder, for relative `folder:` filters (the CLI sends it)."""
    raw = request.query.get("cwd")
    if raw is None:
        return None
    if not os.path.isabs(raw):
        raise bad("cwd", f"cwd {raw[:80]!r} must be an absolute path")
    return Path(raw)


async def search_upload(request: web.Request) -> web.Response:
    """Query by uploaded image(s) and/or text: multipart fields `q`, `k`, `image` (files) and
    `weight` (one per image, in order; default 1, negative means 'less like this')."""
    ctx = ctx_of(request)
    if not request.content_type.startswith("multipart/"):
        raise bad("body", "send multipart/form-data with `image` file parts and/or a `q` field")
    limit = request.app._client_max_size  # server.max_upload_mb
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"the upload is {request.content_length} bytes; at most {limit} are allowed "
                            "(server.max_upload_mb)", "image")
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"the upload is larger than {limit} bytes (server.max_upload_mb)", "image") from None
    except ValueError as exc:  # aiohttp's multipart parser: a malformed body
        raise bad("body", f"malformed multipart/form-data body: {exc}"[:300]) from None
    q = str(form.get("q", ""))
    if len(q) > ctx.config.server.max_query_chars:
        raise bad("q", f"q is {len(q)} characters long; at most {ctx.config.server.max_query_chars} are allowed")
    k = bounded_int(form.get("k"), "k", ctx.config.search.k, 1, MAX_K)
    files = [f for f in form.getall("image", []) if isinstance(f, web.FileField)]
    weights = [str(w) for w in form.getall("weight", [])]
    if not files and not q.strip():
        raise bad("image", "give at least one `image` file part or a `q` text")
    if len(files) > 16:
        raise bad("image", f"{len(files)} images sent; at most 16 are allowed")
    if weights and len(weights) != len(files):
        raise bad("weight", f"{len(weights)} weights for {len(files)} images; give one per image or none")
    images = []
    for n, upload in enumerate(files):
        if upload.content_type not in IMAGE_TYPES and upload.content_type != "application/octet-stream":
            raise bad("image", f"{upload.filename!r} is {upload.content_type}; send an image "
                               f"({', '.join(sorted(IMAGE_TYPES))})")
        weight = _weight(weights[n]) if weights else 1.0
        images.append((await _embed_upload(ctx, upload.file.read(), upload.filename or f"image {n + 1}"), weight))
    results = await ctx.run(ctx.service.search, q or "", k, None, scope(request), images)
    return as_json(results_json(results, False))


def _weight(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise bad("weight", f"weight {raw[:20]!r} is not a number; use -10 to 10") from None
    if not -10 <= value <= 10 or value != value:
        raise bad("weight", f"weight {value} is out of range; use -10 to 10")
    return value


async def _embed_upload(ctx: Context, data: bytes, name: str) -> Any:
    """Decoded in a decode worker, embedded in the model worker (both the indexing process's): no image
    work in this process. By the model searches use: the live one, while a new one re-embeds."""
    clip = await ctx.run(ctx.service.clip)
    if clip is None:  # what `pixdex similar` says without a daemon, word for word

        raise ModelError(ctx.service.no_clip_message())
    model = (str(clip.directory), clip.transform)
    return await asyncio.wrap_future(ctx.core.ask(Core.embed_upload, data, name, model))


async def similar(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    k = int_param(request, "k", ctx.config.search.k, 1, MAX_K)
    filters = text_param(request, "filter", ctx.config.server.max_query_chars, required=False)
    paths: list[Path] = []
    ids, given = request.query.getall("id", []), request.query.getall("path", [])
    for raw in request.query.getall("path_b64", []):  # the exact bytes of a path that is not UTF-8
        try:
            given.append(os.fsdecode(base64.b64decode(raw, validate=True)))
        except ValueError:
            raise bad("path_b64", "path_b64 must be the base64 of a path's bytes") from None
    if len(ids) + len(given) > 16:
        raise bad("id", f"{len(ids) + len(given)} images given; at most 16 are allowed")
    for raw in ids:  # several: images like all of them (the mean of their embeddings)
        if not DIGITS.match(raw) or not 1 <= int(raw) <= MAX_ID:
            raise bad("id", f"id {raw[:40]!r} is not an item id")
        paths.append((await ctx.run(visible_row, request, int(raw))).fspath)
    for raw in given if not ids else []:
        path = Path(raw)
        if not path.is_absolute():
            raise bad("path", "path must be absolute")
        row = await ctx.run(row_by_path, ctx, path)
        if row is None or not inside(row.path, visible_roots(request)):  # one answer: no probing of other folders
            raise ApiError(404, f"{display_path(path)} is not indexed; give an indexed image, or POST /search "
                                "with the image", "path")
        paths.append(path)
    if not paths:
        raise bad("id", "give id=ITEM or path=/absolute/path/of/an/indexed/image (either may repeat)")

    try:
        results = await ctx.run(ctx.service.similar, paths, k, filters, None, scope(request))
    except QueryError as exc:
        raise bad("filter", str(exc)) from None
    return as_json(results_json(results, request.query.get("raw") == "1"))
