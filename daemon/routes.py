"""The JSON API's handlers (documented in daemon/openapi.json; a test keeps both in step).

Each handler validates its parameters (a 4xx names the parameter and what is allowed), then
delegates: searching to `pixdex.query`, indexing requests to the daemon's scanner thread, image
work to the core's worker processes. No handler serves a file outside the watched folders: an
item's path is opened without following a final symlink, and the opened file's real path must lie
in a collection the caller may see.
"""

from __future__ import annotations

import asyncio
import base64
import re
import stat
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from pixdex.daemon.app import CONTEXT, ApiError, Context, bad, scope
from pixdex.daemon.metrics import CONTENT_TYPE
from pixdex.daemon.runtime import Unavailable
from pixdex.indexer.catalog.rows import ImageRow
from pixdex.indexer.errors import ReadError
from pixdex.indexer.paths import display_path
from pixdex.query.service import MAX_K, Results

OPENAPI = Path(__file__).with_name("openapi.json")
OPENAPI_DOC = web.AppKey("openapi", bytes)
MAX_ID = 2**63 - 1
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/heic",
               "image/heif", "image/avif"}
CHUNK = 256 * 1024
DIGITS = re.compile(r"^[0-9]{1,19}$")  # ASCII only: str.isdigit() takes '²' and Arabic-Indic digits


def add_routes(app: web.Application) -> None:
    app[OPENAPI_DOC] = OPENAPI.read_bytes()  # read once at start: a reinstall under a running daemon removes it
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/search", search)
    app.router.add_post("/search", search_upload)
    app.router.add_get("/similar", similar)
    app.router.add_get("/items/{id}", item)
    app.router.add_patch("/items/{id}", edit_item)
    app.router.add_get("/file/{id}", original)
    app.router.add_get("/thumbnail/{id}", thumbnail)
    app.router.add_post("/pause", pause)
    app.router.add_post("/resume", resume)
    app.router.add_post("/reindex", reindex)
    app.router.add_get("/watches", watches)
    app.router.add_post("/watches", watch_add)
    app.router.add_delete("/watches/{name}", watch_remove)
    app.router.add_get("/failures", failures)
    app.router.add_get("/events", events)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)


def ctx_of(request: web.Request) -> Context:
    return request.app[CONTEXT]


def as_json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


# Parameters -----------------------------------------------------------------------------------
def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    return bounded_int(request.query.get(name), name, default, low, high)


def bounded_int(raw: Any, name: str, default: int, low: int, high: int) -> int:
    """A query or form value as a whole number in [low, high]; absent or empty means `default`."""
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise bad(name, f"{name} = {str(raw)[:40]!r} is not a whole number; use {low} to {high}") from None
    if not low <= value <= high:
        raise bad(name, f"{name} = {value} is out of range; use {low} to {high}")
    return value


def text_param(request: web.Request, name: str, limit: int, required: bool = True) -> str:
    value = request.query.get(name, "")
    if required and not value.strip():
        raise bad(name, f"{name} is required (the query, as `pixdex search` takes it)")
    if len(value) > limit:
        raise bad(name, f"{name} is {len(value)} characters long; at most {limit} are allowed (server.max_query_chars)")
    return value


def item_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not DIGITS.match(raw) or not 1 <= int(raw) <= MAX_ID:
        raise bad("id", f"id {raw[:40]!r} is not an item id (a whole number from 1 to {MAX_ID})")
    return int(raw)


def results_json(results: Results, raw: bool) -> dict[str, Any]:
    data = results.as_dict()
    if raw:  # the exact path bytes, for `pixdex search -0` through the daemon
        for hit, out in zip(results.hits, data["hits"], strict=True):
            out["path_b64"] = base64.b64encode(hit.raw_path).decode()
    return data


# Handlers -------------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    """Over the socket it also names the data directory it serves: the CLI asks (`brief=1`: without asking the
    indexing process) before anything else, and works on its own data directory when they differ."""
    ctx = ctx_of(request)
    own = {"data_dir": os.path.realpath(ctx.config.data_dir)} if request["token"] is None else {}
    if request.query.get("brief") == "1":
        return as_json({"ok": True, "pid": os.getpid(), **own})
    try:
        state = await asyncio.wrap_future(ctx.daemon.call("state", 0, False))
    except Unavailable:
        state = {"ok": False, "mode": "reduced", "paused": False}
    return as_json({"ok": state["ok"], "pid": os.getpid(), "uptime": round(time.time() - ctx.daemon.started, 1),
                    "mode": state["mode"], "paused": state["paused"], **own})


async def status(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _full_access(request)  # it names every folder and file in flight
    return as_json(await ctx.run(live_status, ctx))


def live_status(ctx: Context) -> dict[str, Any]:
    """Everything `pixdex status` shows: the stored counts plus what the daemon is doing now."""
    import psutil

    from pixdex.daemon.library import status as stored_status

    daemon = ctx.daemon
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
        from pixdex.indexer.catalog import Catalog
        from pixdex.indexer.describe import describer_id

        catalog = Catalog(ctx.config.layout.catalog, read_only=True)
        try:
            info["describe"] |= catalog.describe_counts(describer_id(ctx.config.describe))
        finally:
            catalog.close()
    info["watch"] = list(state["watch"].values())
    info["connections"] = ctx.connections.counts()
    info["collections"] = [c.as_dict() for c in daemon.collections]
    info["loaded_models"] = {"indexing": workers.get("loaded", []), "query": query_models, "rss": rss,
                             "providers": workers.get("providers", [])}
    return info


async def search(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    q = text_param(request, "q", ctx.config.server.max_query_chars)
    k = int_param(request, "k", ctx.config.search.k, 1, MAX_K)
    cwd = _cwd(request)
    results = await ctx.run(ctx.service.search, q, k, cwd, scope(request))
    return as_json(results_json(results, request.query.get("raw") == "1"))


def _cwd(request: web.Request) -> Path | None:
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
        from pixdex.indexer.errors import ModelError

        raise ModelError(ctx.service.no_clip_message())
    model = (str(clip.directory), clip.transform)
    return await asyncio.wrap_future(ctx.daemon.call("embed_upload", data, name, model))


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
        paths.append((await ctx.run(_visible_row, request, int(raw))).fspath)
    for raw in given if not ids else []:
        path = Path(raw)
        if not path.is_absolute():
            raise bad("path", "path must be absolute")
        row = await ctx.run(_row_by_path, ctx, path)
        if row is None or not _inside(row.path, _visible_roots(request)):  # one answer: no probing of other folders
            raise ApiError(404, f"{display_path(path)} is not indexed; give an indexed image, or POST /search "
                                "with the image", "path")
        paths.append(path)
    if not paths:
        raise bad("id", "give id=ITEM or path=/absolute/path/of/an/indexed/image (either may repeat)")
    from pixdex.query.parse import QueryError

    try:
        results = await ctx.run(ctx.service.similar, paths, k, filters, None, scope(request))
    except QueryError as exc:
        raise bad("filter", str(exc)) from None
    return as_json(results_json(results, request.query.get("raw") == "1"))


def _row_by_path(ctx: Context, path: Path) -> ImageRow | None:
    return ctx.service.reader.catalog().by_path(os.fsencode(os.path.realpath(path))) \
        if ctx.service.reader.exists() else None


def _visible_row(request: web.Request, image_id: int) -> ImageRow:
    ctx = ctx_of(request)
    row = ctx.service.reader.catalog().get(image_id) if ctx.service.reader.exists() else None
    if row is None:
        raise ApiError(404, f"no item {image_id}", "id")
    _check_scope(request, row)
    return row


def _visible_roots(request: web.Request) -> list[bytes]:
    """The watched folders the caller may see: all of them, or a limited token's."""
    allowed = scope(request)
    if allowed is not None:
        return [os.fsencode(p) for p in allowed]
    return [c.path for c in ctx_of(request).daemon.collections]


def _inside(path: bytes, roots: list[bytes]) -> bool:
    return any(path.startswith(r.rstrip(b"/") + b"/") for r in roots)


def _check_scope(request: web.Request, row: ImageRow) -> None:
    """The item must lie in a watched folder the caller may see (404 either way: no probing)."""
    if not _inside(row.path, _visible_roots(request)):
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
        if not stat.S_ISREG(st.st_mode) or not _inside(real, _visible_roots(request)):
            raise ApiError(404, f"no item {row.id}", "id")
        return fd, st, real
    except BaseException:
        os.close(fd)
        raise


async def item(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    row = await ctx.run(_visible_row, request, item_id(request))
    return as_json(item_json(row))


async def edit_item(request: web.Request) -> web.Response:
    """Add or remove keywords, set the description: written to the sidecar, then to the indexes."""
    ctx = ctx_of(request)
    image_id = item_id(request)
    await ctx.run(_visible_row, request, image_id)
    body = await _json_body(request)
    unknown = set(body) - {"add_tags", "remove_tags", "description"}
    if unknown:
        raise bad(sorted(unknown)[0], "unknown field; allowed: add_tags, remove_tags, description")
    add = _tag_list(body.get("add_tags", []), "add_tags")
    remove = _tag_list(body.get("remove_tags", []), "remove_tags")
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 10_000
                                    or any(ord(c) < 32 and c not in "\n\t" for c in description)):
        raise bad("description", "description must be text of at most 10000 characters")
    if not add and not remove and description is None:
        raise bad("add_tags", "nothing to change: give add_tags, remove_tags or description")
    from pixdex.indexer.errors import SidecarError

    try:
        await ctx.run(ctx.daemon.edit_item, image_id, add, remove, description)
    except SidecarError as exc:
        raise ApiError(409, f"the sidecar was not changed: {exc}", "id") from None
    row = await ctx.run(_visible_row, request, image_id)
    return as_json(item_json(row))


def _tag_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 200:
        raise bad(name, f"{name} must be a list of at most 200 keywords")
    for tag in value:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > 200 or any(ord(c) < 32 for c in tag):
            raise bad(name, f"{name}: {str(tag)[:40]!r} is not a keyword (1–200 printable characters)")
    return list(dict.fromkeys(t.strip() for t in value))


def item_json(row: ImageRow) -> dict[str, Any]:
    facts = row.fact_dict
    return {"id": row.id, "path": display_path(row.path), "state": row.state, "reason": row.reason,
            "size": row.size, "mtime_ns": row.mtime_ns, "width": row.width, "height": row.height, "taken": row.taken,
            "camera": row.camera, "tags": row.tag_list, "metadata": row.metadata, "clip_model": row.clip_model,
            "tagger_model": row.tagger_model, "sidecar_error": row.sidecar_error,
            "waiting_for_models": row.waits_for_models, "rejected": row.rejected_list,
            "facts": {k: v for k, v in facts.items() if k != "description"}, "description": facts.get("description"),
            "llm": row.llm_dict}


async def original(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    row = await ctx.run(_visible_row, request, item_id(request))
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
    import mimetypes

    found = mimetypes.guess_type(os.fsdecode(path))[0]
    return found if found and found.startswith("image/") else "application/octet-stream"


async def thumbnail(request: web.Request) -> web.StreamResponse:
    """A cached thumbnail (the desktop's or pixdex's own) is found and read in one call on the thumbnails' own
    threads; only one to make is a call to the indexing process, bounded by `ctx.thumbnail_jobs`."""
    from pixdex.daemon.thumbnail_jobs import Busy
    from pixdex.indexer import thumbnails

    ctx = ctx_of(request)
    size = int_param(request, "size", 256, 1, 1024)
    found = await ctx.thumbnail_jobs.run(_cached_thumbnail, request, item_id(request), size)
    if isinstance(found, _Missing):
        bucket, pixels = thumbnails.bucket(size)
        dest = thumbnails.own_cache_path(ctx.thumbnail_jobs.cache_dir, found.row_id, found.mtime_ns, bucket)
        try:
            made = await ctx.thumbnail_jobs.make(ctx.daemon, found.real, dest, pixels, ctx.config.decode.max_pixels)
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
    from pixdex.indexer import thumbnails

    ctx = ctx_of(request)
    row = _visible_row(request, image_id)
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


async def pause(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _full_access(request)
    await ctx.run(ctx.daemon.pause, True)
    return as_json({"paused": True})


async def resume(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _full_access(request)
    await ctx.run(ctx.daemon.pause, False)
    return as_json({"paused": False})


def _full_access(request: web.Request) -> None:
    if scope(request) is not None:
        raise ApiError(403, "this token is limited to some collections; this action needs the full token")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        raise bad("body", "the body is not JSON (or nested too deeply)") from None
    if not isinstance(body, dict):
        raise bad("body", "the body must be a JSON object")
    return body


async def reindex(request: web.Request) -> web.Response:
    """Queue files (or every indexed file under folders) ahead of everything else; none: everything."""
    ctx = ctx_of(request)
    _full_access(request)
    body = await _json_body(request)
    if set(body) - {"paths"}:
        raise bad(sorted(set(body) - {"paths"})[0], "unknown field; allowed: paths")
    paths = body.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and os.path.isabs(p) for p in paths):
        raise bad("paths", "paths must be a list of absolute paths")
    if len(paths) > 10_000:
        raise bad("paths", "at most 10000 paths per request")
    roots = [c.path for c in ctx.daemon.collections]
    for path in paths:
        real = os.fsencode(os.path.realpath(path))
        if not any(real == r or real.startswith(r.rstrip(b"/") + b"/") for r in roots):
            raise bad("paths", f"{path} is not in a watched folder; `pixdex watch list` shows them")
    count = await asyncio.wrap_future(ctx.daemon.submit("reindex", [Path(p) for p in paths]))
    return as_json({"queued": count})


async def watches(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    allowed = scope(request)
    shown = [c for c in ctx.daemon.collections
             if allowed is None or display_path(c.path) in allowed]
    modes = (await asyncio.wrap_future(ctx.daemon.call("state", 0, False)))["watch"]
    return as_json([{**c.as_dict(), "watch": modes.get(c.path, {}).get("mode", "off"),
                     "why": modes.get(c.path, {}).get("why", "")} for c in shown])


async def watch_add(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _full_access(request)
    body = await _json_body(request)
    path, name = body.get("path"), body.get("name")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise bad("path", "path must be the absolute path of a folder")
    if name is not None and not isinstance(name, str):
        raise bad("name", "name must be a string")
    added = await asyncio.wrap_future(ctx.daemon.submit("watch-add", Path(path), name))
    return as_json(added, status=201)


async def watch_remove(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _full_access(request)
    removed = await asyncio.wrap_future(ctx.daemon.submit("watch-remove", request.match_info["name"]))
    return as_json(removed)


async def failures(request: web.Request) -> web.Response:
    from pixdex.daemon.library import failures as stored_failures

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
    try:
        await _stream_events(request, ctx, response, last)
    except ConnectionResetError:  # the client went away: nothing to answer
        pass
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
        from pixdex.daemon.events import Event

        keep = LIMITED_EVENTS[event.kind]
        await response.write(Event(event.id, event.kind, {k: v for k, v in event.data.items() if k in keep}).sse())


async def metrics(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _full_access(request)
    text = await ctx.run(ctx.metrics.text)
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOC], content_type="application/json")
