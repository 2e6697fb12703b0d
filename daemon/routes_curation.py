"""Curation of many items and the trash: PATCH /items (one edit — keywords added or removed, rating, label — for a
list of ids, each sidecar written as PATCH /items/{id} writes it) and POST /items/{id}/trash (the file and its
sidecar into the freedesktop trash, never a hard delete; the full token's only)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from pixdex.daemon.core_api import Core
from pixdex.daemon.http_api import MAX_ID, ApiError, as_json, bad, ctx_of, full_access, item_id, json_body
from pixdex.daemon.routes_items import edit_fields, visible_row
from pixdex.indexer.errors import PathError

MAX_ITEMS = 1000


def add_routes(app: web.Application) -> None:
    app.router.add_patch("/items", edit_items)
    app.router.add_post("/items/{id}/trash", trash_item)


async def edit_items(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    body = await json_body(request)
    unknown = set(body) - {"ids", "add_tags", "remove_tags", "rating", "label"}
    if unknown:
        raise bad(sorted(unknown)[0], "unknown field; allowed: ids, add_tags, remove_tags, rating, label")
    ids = _ids(body.get("ids"))
    add, remove, rating, label = edit_fields(body, ctx.config.sidecar.tag_parent)
    if not add and not remove and rating is None and label is None:
        raise bad("add_tags", "nothing to change: give add_tags, remove_tags, rating or label")
    visible, results = await ctx.run(_visible, request, ids)
    if visible:
        results += await asyncio.wrap_future(ctx.core.ask(Core.edit_items, visible, add, remove, rating, label))
    order = {image_id: n for n, image_id in enumerate(ids)}
    results.sort(key=lambda r: order[r["id"]])
    return as_json({"results": results, "ok": sum(1 for r in results if r["ok"]),
                    "failed": sum(1 for r in results if not r["ok"])})


def _ids(value: object) -> list[int]:
    if not isinstance(value, list) or not value or len(value) > MAX_ITEMS:
        raise bad("ids", f"ids must be a list of 1 to {MAX_ITEMS} item ids")
    for raw in value:
        if type(raw) is not int or not 1 <= raw <= MAX_ID:
            raise bad("ids", f"ids: {str(raw)[:40]!r} is not an item id (a whole number from 1 to {MAX_ID})")
    return list(dict.fromkeys(value))


def _visible(request: web.Request, ids: list[int]) -> tuple[list[int], list[dict[str, Any]]]:
    """The ids the caller may edit, and a failed result for each other one."""
    visible: list[int] = []
    refused: list[dict[str, Any]] = []
    for image_id in ids:
        try:
            visible_row(request, image_id)
        except ApiError:
            refused.append({"id": image_id, "ok": False, "error": f"no item {image_id}"})
        else:
            visible.append(image_id)
    return visible, refused


async def trash_item(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    full_access(request)
    image_id = item_id(request)
    await ctx.run(visible_row, request, image_id)
    try:
        moved = await asyncio.wrap_future(ctx.core.ask(Core.trash_item, image_id))
    except PathError as exc:  # TrashError: the file stays where it is
        raise ApiError(409, str(exc), "id") from None
    return as_json(moved)

