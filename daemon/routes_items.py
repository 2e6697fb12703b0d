"""The item routes: GET and PATCH /items/{id} (keywords, description, rating, label), GET /file/{id},
GET /thumbnail/{id}. No handler serves a file
outside the watched folders: an item's path is opened without following a final symlink, and the opened
file's real path must lie in a collection the caller may see."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from pixdex.daemon.core_api import Core
from pixdex.daemon.http_api import (
    ApiError,
    Context,
    as_json,
    bad,
    ctx_of,
    int_param,
    item_id,
    json_body,
    scope,
)
from pixdex.daemon.thumbnail_jobs import Busy
from pixdex.indexer import thumbnails
from pixdex.indexer.catalog.rows import ImageRow
from pixdex.indexer.errors import ReadError, SidecarError
from pixdex.indexer.paths import display_path
from pixdex.indexer.sidecars.keys import LABELS


def add_routes(app: web.Application) -> None:
    app.router.add_get("/items/{id}", item)
    app.router.add_patch("/items/{id}", edit_item)
    app.router.add_get("/file/{id}", original)
    app.router.add_get("/thumbnail/{id}", thumbnail)


CHUNK = 256 * 1024


def row_by_path(ctx: Context, path: Path) -> ImageRow | None:
    return ctx.service.reader.catalog().by_path(os.fsencode(os.path.realpath(path))) \
        if ctx.service.reader.exists() else None


def visible_row(request: web.Request, image_id: int) -> ImageRow:
    ctx = ctx_of(request)
    row = ctx.service.reader.catalog().get(image_id) if ctx.service.reader.exists() else None
    if row is None:
        raise ApiError(404, f"no item {image_id}", "id")
    check_scope(request, row)
    return row


def visible_roots(request: web.Request) -> list[bytes]:
    """The watched folders the caller may see: all of them, or a limited token's."""
    allowed = scope(request)
    if allowed is not None:
        return [os.fsencode(p) for p in allowed]
    return [c.path for c in ctx_of(request).core.collections]


def inside(path: bytes, roots: list[bytes]) -> bool:
    return any(path.startswith(r.rstrip(b"/") + b"/") for r in roots)


def check_scope(request: web.Request, row: ImageRow) -> None:
    """The item must lie in a watched folder the caller may see (404 either way: no probing)."""
    if not inside(row.path, visible_roots(request)):
        raise ApiError(404, f"no item {row.id}", "id")


def _open_inside(request: web.Request, row: ImageRow) -> tuple[int, os.stat_result, bytes]:
    """Open the item's file, refusing a final symlink, and check that what was opened lies inside."""
    try:
        fd = os.open(row.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ApiError(404, f"item {row.id}: the file cannot be opened ({exc.strerror}); it may have moved",
                       "id") from None
    try:
        real = os.fsencode(os.readlink(f"/proc/self/fd/{fd}"))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not inside(real, visible_roots(request)):
            raise ApiError(404, f"no item {row.id}", "id")
        return fd, st, real
    except BaseException:
        os.close(fd)
        raise


async def item(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    row = await ctx.run(visible_row, request, item_id(request))
    return as_json(item_json(row))


async def edit_item(request: web.Request) -> web.Response:
    """Add or remove keywords, set the description, the rating or the colour label: written to the sidecar, then to
    the indexes."""
    ctx = ctx_of(request)
    image_id = item_id(request)
    await ctx.run(visible_row, request, image_id)
    body = await json_body(request)
    unknown = set(body) - {"add_tags", "remove_tags", "description", "rating", "label"}
    if unknown:
        raise bad(sorted(unknown)[0], "unknown field; allowed: add_tags, remove_tags, description, rating, label")
    add, remove, rating, label = edit_fields(body, ctx.config.sidecar.tag_parent)
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 10_000
                                    or any(ord(c) < 32 and c not in "\n\t" for c in description)):
        raise bad("description", "description must be text of at most 10000 characters")
    if not add and not remove and description is None and rating is None and label is None:
        raise bad("add_tags", "nothing to change: give add_tags, remove_tags, description, rating or label")

    try:
        await asyncio.wrap_future(ctx.core.ask(Core.edit_item, image_id, add, remove, description, rating, label))
    except SidecarError as exc:
        raise ApiError(409, f"the sidecar was not changed: {exc}", "id") from None
    row = await ctx.run(visible_row, request, image_id)
    return as_json(item_json(row))


def edit_fields(body: dict[str, Any], parent: str) -> tuple[list[str], list[str], int | None, str | None]:
    """The keywords to add and remove, the rating and the label an edit's body asks for (checked). `parent`: the
    parent of pixdex's own keywords (`[sidecar] tag_parent`), which a person's keyword may not claim."""
    add = _tag_list(body.get("add_tags", []), "add_tags", parent)
    remove = _tag_list(body.get("remove_tags", []), "remove_tags", parent)
    rating = body.get("rating")
    if rating is not None and (type(rating) is not int or not 0 <= rating <= 5):
        raise bad("rating", f"rating = {str(rating)[:20]} is not a rating; use 0 (none) to 5 stars (a rejection, -1, "
                            "is not taken)")
    label = body.get("label")
    if isinstance(label, str):  # "red" as the query's label:red writes it: the sidecar gets XMP's "Red"
        label = next((known for known in LABELS if known.lower() == label.strip().lower()), label)
    if label is not None and label not in ("", *LABELS):
        raise bad("label", f"label = {str(label)[:20]!r} is not a colour label; use one of {', '.join(LABELS)}, or "
                           '"" to remove it')
    return add, remove, rating, label


def _tag_list(value: Any, name: str, parent: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 200:
        raise bad(name, f"{name} must be a list of at most 200 keywords")
    for tag in value:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > 200 or any(ord(c) < 32 for c in tag):
            raise bad(name, f"{name}: {str(tag)[:40]!r} is not a keyword (1–200 printable characters)")
        if tag.split("|")[0].strip().casefold() == parent.strip().casefold():
            raise bad(name, _reserved(name, tag, parent))
    return list(dict.fromkeys(t.strip() for t in value))


def _reserved(name: str, tag: str, parent: str) -> str:
    """Why a keyword in pixdex's own namespace (`parent|…`, or the parent itself) is refused, and what to write."""
    if "|" not in tag:
        return f"{name}: {tag[:60]!r} is the parent of pixdex's own keywords ({parent}|…); choose another keyword"
    leaf = tag.split("|")[-1].strip()
    return (f"{name}: {tag[:60]!r} is in pixdex's own keywords ({parent}|…), which only pixdex writes; name the "
            f"keyword alone ({leaf!r})" + (" or under another parent" if name == "add_tags" else ""))


def item_json(row: ImageRow) -> dict[str, Any]:
    facts = row.fact_dict
    return {"id": row.id, "path": display_path(row.path), "state": row.state, "reason": row.reason,
            "size": row.size, "mtime_ns": row.mtime_ns, "width": row.width, "height": row.height, "taken": row.taken,
            "camera": row.camera, "tags": row.tag_list, "metadata": row.metadata, "clip_model": row.clip_model,
            "tagger_model": row.tagger_model, "sidecar_error": row.sidecar_error,
            "waiting_for_models": row.waits_for_models, "rejected": row.rejected_list,
            "facts": {k: v for k, v in facts.items() if k not in ("description", "place", "geo")},
            "description": facts.get("description"), "rating": facts.get("rating"), "label": facts.get("label"),
            "llm": row.llm_dict,
            "place": facts.get("place") or None, "place_from_gps": facts.get("geo") or None,
            "text": {"ocr": row.ocr_text, "read_by": row.ocr_by, "error": row.ocr_error}}


async def original(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    row = await ctx.run(visible_row, request, item_id(request))
    fd, st, _real = await ctx.run(_open_inside, request, row)
    return await _stream_fd(request, ctx, fd, st.st_size, _mime(row.path))


async def _stream_fd(request: web.Request, ctx: Context, fd: int, size: int, content_type: str,
                     cache: str = "private, max-age=60") -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(size),
                                           "Cache-Control": cache, "X-Content-Type-Options": "nosniff"})
    try:
        await response.prepare(request)
        while chunk := await ctx.run(os.read, fd, CHUNK):
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:  # the client went away mid-file
        pass
    finally:
        os.close(fd)
    return response


def _mime(path: bytes) -> str:
    found = mimetypes.guess_type(os.fsdecode(path))[0]
    return found if found and found.startswith("image/") else "application/octet-stream"


async def thumbnail(request: web.Request) -> web.StreamResponse:
    """A cached thumbnail (the desktop's or pixdex's own) is found and read in one call on the thumbnails' own
    threads; only one to make is a call to the indexing process, bounded by `ctx.thumbnail_jobs`."""
    ctx = ctx_of(request)
    size = int_param(request, "size", 256, 1, 1024)
    found = await ctx.thumbnail_jobs.run(_cached_thumbnail, request, item_id(request), size)
    if isinstance(found, _Missing):
        bucket, pixels = thumbnails.bucket(size)
        dest = thumbnails.own_cache_path(ctx.thumbnail_jobs.cache_dir, found.row_id, found.mtime_ns, bucket)
        try:
            made = await ctx.thumbnail_jobs.make(ctx.core, found.real, dest, pixels, ctx.config.decode.max_pixels)
        except ReadError as exc:
            raise ApiError(422, f"item {found.row_id}: {exc.reason}", "id") from None
        except Busy as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from None
        found = made, await ctx.thumbnail_jobs.run(made.read_bytes)
    path, data = found
    return web.Response(body=data, content_type="image/png" if path.suffix == ".png" else "image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})


@dataclass(frozen=True)
class _Missing:
    """A thumbnail that is in no cache yet: the file to make it from."""

    row_id: int
    real: bytes
    mtime_ns: int


def _cached_thumbnail(request: web.Request, image_id: int, size: int) -> tuple[Path, bytes] | _Missing:
    """The visible item's cached thumbnail of at least `size` px and its bytes, or what is needed to make one."""
    ctx = ctx_of(request)
    row = visible_row(request, image_id)
    fd, st, real = _open_inside(request, row)
    os.close(fd)
    found = thumbnails.find_freedesktop(row.path, st.st_mtime_ns // 1_000_000_000, size, ctx.config.environ)
    if found is None:
        found = thumbnails.find_own(ctx.thumbnail_jobs.cache_dir, row.id, st.st_mtime_ns, thumbnails.bucket(size)[0])
        if found is not None:
            thumbnails.mark_used(found)
    if found is None:
        return _Missing(row.id, real, st.st_mtime_ns)
    try:
        return found, found.read_bytes()
    except FileNotFoundError:  # pruned meanwhile
        return _Missing(row.id, real, st.st_mtime_ns)
