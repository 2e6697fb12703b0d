"""What every handler shares: the request's `Context` (config, the `Core` proxy, the search service, the event
bus, tokens, sessions, metrics), `ApiError` (a refusal naming the parameter), and the helpers that read
and answer JSON. Routes and the web page import it; it imports neither."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from pixdex.daemon.connections import Connections
from pixdex.daemon.core_process import CoreProcess
from pixdex.daemon.events import EventBus
from pixdex.daemon.metrics import Metrics
from pixdex.daemon.sessions import Sessions
from pixdex.daemon.thumbnail_jobs import ThumbnailJobs
from pixdex.daemon.tokens import Token, Tokens
from pixdex.indexer.paths import display_path
from pixdex.indexer.settings import Config
from pixdex.query.service import SearchService

T = TypeVar("T")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Context:
    config: Config
    core: CoreProcess  # the indexing process, as `core_api.Core` (and its pushed collections)
    service: SearchService
    tokens: Tokens
    bus: EventBus
    metrics: Metrics
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="pixdex-query"))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: Sessions = field(default_factory=Sessions)  # the web page's browsers
    lan_hosts: set[str] = field(default_factory=set)  # Host values a LAN request may carry (server.lan)
    lan: tuple[str, int] | None = None  # the LAN listener's address and port, as bound at start
    tcp_port: int | None = None  # the loopback listener's port, as bound at start
    connections: Connections = field(default_factory=Connections)  # each listener's open connections and caps
    thumbnail_jobs: ThumbnailJobs = field(init=False)  # thumbnails being made, and the cache's budget

    def __post_init__(self) -> None:
        server = self.config.server
        self.thumbnail_jobs = ThumbnailJobs(self.config.cache_dir / "thumbnails", server.thumbnail_jobs,
                                            int(server.thumbnail_cache_mb * 2**20))

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: function(*args))


CONTEXT = web.AppKey("context", Context)


def is_text(value: str) -> bool:
    """Whether `value` is valid Unicode text (aiohttp keeps bytes that are not UTF-8 as lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True



class ApiError(web.HTTPException):
    """A refused request: its JSON body names the parameter and what is allowed."""

    def __init__(self, status: int, message: str, parameter: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        self.status_code = status
        body = {"error": message, **({"parameter": parameter} if parameter else {}), **extra}
        text = json.dumps(body, ensure_ascii=False)
        if not text.isascii() and not is_text(text):  # a message quoting bytes that are not UTF-8: \udcXX escapes
            text = json.dumps(body)
        super().__init__(headers=headers, text=text, content_type="application/json")


def bad(parameter: str, message: str) -> ApiError:
    return ApiError(400, message, parameter)


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


MAX_ID = 2**63 - 1


DIGITS = re.compile(r"^[0-9]{1,19}$")  # ASCII only: str.isdigit() takes '²' and Arabic-Indic digits


def item_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not DIGITS.match(raw) or not 1 <= int(raw) <= MAX_ID:
        raise bad("id", f"id {raw[:40]!r} is not an item id (a whole number from 1 to {MAX_ID})")
    return int(raw)


async def json_body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        raise bad("body", "the body is not JSON (or nested too deeply)") from None
    if not isinstance(body, dict):
        raise bad("body", "the body must be a JSON object")
    return body


def full_access(request: web.Request) -> None:
    if scope(request) is not None:
        raise ApiError(403, "this token is limited to some collections; this action needs the full token")


def scope(request: web.Request) -> tuple[str, ...] | None:
    """The folders a limited token may see, or None for everything."""
    token: Token | None = request["token"]
    if token is None or token.collections is None:
        return None
    ctx = request.app[CONTEXT]
    names = {n.lower() for n in token.collections}
    return tuple(display_path(c.path) for c in ctx.core.collections if c.name.lower() in names)
