"""The HTTP application: one aiohttp app, served on the Unix socket and on loopback TCP.

Middlewares, outermost first: `in_progress` (marks the connection busy for the connection caps in
`pixdex.daemon.connections`), `errors` (pixdex's typed errors become 4xx JSON bodies naming the
parameter; every request is counted for /metrics), then `guard` (header values must be text; Host
must be a loopback name — DNS rebinding; writes must not come from another origin; TCP needs a
bearer token, the Unix socket the same uid as ours).
Handlers live in `routes_status`, `routes_search`, `routes_items`, `routes_curation`, `routes_duplicates`,
`routes_timeline`, `routes_library` and `webpage`, on what `http_api` shares; they validate, then run blocking
work on a small thread pool so the loop keeps answering.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time

from aiohttp import web

from pixdex.daemon import (
    routes_curation,
    routes_duplicates,
    routes_items,
    routes_library,
    routes_search,
    routes_status,
    routes_timeline,
    webpage,
)
from pixdex.daemon.core_api import Unavailable
from pixdex.daemon.http_api import CONTEXT, ApiError, Context, Handler, is_text
from pixdex.daemon.sessions import COOKIE
from pixdex.daemon.tokens import Token, Tokens
from pixdex.indexer.collections import CollectionError
from pixdex.indexer.errors import ModelError, PixdexError, ReadError
from pixdex.indexer.paths import display_path
from pixdex.query.parse import QueryError

log = logging.getLogger(__name__)


LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1", "localhost.localdomain", "ip6-localhost"}


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


# Middlewares ---------------------------------------------------------------------------------
# Reachable without credentials (the Host is still checked): the page says how to log in, the link logs in.
PUBLIC_PATHS, PUBLIC_PREFIX = {"/", "/login"}, "/static/"


@web.middleware
async def in_progress(request: web.Request, handler: Handler) -> web.StreamResponse:
    """While its request runs a connection is busy: a connection cap never closes it to make room."""
    with request.app[CONTEXT].connections.busy(request.transport):
        return await handler(request)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    _check_header_text(request)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    unix = sock is not None and sock.family == socket.AF_UNIX
    allowed = LOOPBACK | (request.app[CONTEXT].lan_hosts if not unix and _on_lan(request) else set())
    host = request.headers.get("Host", "")
    name = _host_name(host)
    if name.lower() not in allowed:
        raise ApiError(403, f"Host {host!r} is not a loopback name; use localhost or 127.0.0.1", "Host")
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        # Over TCP the origin must be this very listener (scheme, host and port: a page of another local
        # server gets the cookie too, SameSite ignores ports); over the socket, a loopback name.
        if origin and (_origin_host(origin) not in allowed or (not unix and not _same_origin(origin, host))):
            raise ApiError(403, f"cross-origin write from {origin!r} refused", "Origin")
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise ApiError(403, "cross-site write refused", "Sec-Fetch-Site")
    if unix:
        uid = _peer_uid(sock) if sock is not None else None
        if uid is not None and uid != os.getuid():
            raise ApiError(403, f"uid {uid} may not use this socket; it belongs to uid {os.getuid()}")
        request["token"] = None
    else:
        request["token"] = _credentials(request)
    return await handler(request)


def _check_header_text(request: web.Request) -> None:
    """A header value that is not UTF-8 text is refused, naming the header (never a 500 further on)."""
    for name, value in request.headers.items():
        if not value.isascii() and not is_text(value):
            status = 401 if name.lower() == "authorization" else 400
            raise ApiError(status, f"the {name} header is not valid text (UTF-8); send it as text", name)


def _host_name(host: str) -> str:
    return host[:host.index("]") + 1] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]


def _on_lan(request: web.Request) -> bool:
    """Whether the request came in on the LAN listener (`server.lan`), not loopback."""
    ctx = request.app[CONTEXT]
    where = request.transport.get_extra_info("sockname") if request.transport else None
    return ctx.lan is not None and isinstance(where, tuple) and where[1] == ctx.lan[1]


def _credentials(request: web.Request) -> Token:
    """TCP: a bearer token, else the web page's session cookie; without either only the public pages, which
    see nothing (an empty scope), are served."""
    if request.headers.get("Authorization"):
        return _bearer(request)
    ctx = request.app[CONTEXT]
    grant = ctx.sessions.grant(request.cookies.get(COOKIE))
    if grant is not None and grant.token_id is not None and not ctx.tokens.alive(grant.token_id):
        ctx.sessions.end(request.cookies.get(COOKIE))  # made with a token revoked since
        grant = None
    if grant is not None:
        request["token_id"] = grant.token_id
        return Token("", grant.collections, grant.label or "browser session")
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIX):
        request["anonymous"] = True
        return Token("", (), "not logged in")
    if request.cookies.get(COOKIE):
        raise ApiError(401, "this web page session has ended (logged out, expired, or its token was revoked); "
                            "`pixdex open` gives a new login link", COOKIE)
    return _bearer(request)  # raises: 401 with how to get a token


def _same_origin(origin: str, host: str) -> bool:
    return origin.lower() == f"http://{host.lower()}"


def _origin_host(origin: str) -> str:
    rest = origin.split("://", 1)[-1]
    return rest[:rest.index("]") + 1] if rest.startswith("[") and "]" in rest else rest.rsplit(":", 1)[0].lower()


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])


def _bearer(request: web.Request) -> Token:
    tokens: Tokens = request.app[CONTEXT].tokens
    header = request.headers.get("Authorization", "")
    kind, _, presented = header.partition(" ")
    if kind.lower() != "bearer" or not presented.strip():
        raise ApiError(401, "this listener needs `Authorization: Bearer <token>`; `pixdex token` shows it",
                       "Authorization", headers={"WWW-Authenticate": "Bearer"})
    token = tokens.find(presented.strip())
    if token is None:
        raise ApiError(401, "unknown token (mistyped, or revoked); `pixdex token` shows a current one", "Authorization",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    request["token_id"] = token.id
    return token


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[CONTEXT].metrics
    start = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        if isinstance(exc, ApiError) or exc.content_type == "application/json":
            raise
        raise ApiError(exc.status, exc.reason) from None
    except QueryError as exc:
        status = 400
        raise ApiError(400, str(exc), "q") from None
    except CollectionError as exc:
        status = 400
        raise ApiError(400, str(exc)) from None
    except ModelError as exc:
        status = 503
        raise ApiError(503, str(exc), fix=request.app[CONTEXT].core.model_fix) from None
    except Unavailable as exc:
        status = 503
        raise ApiError(503, str(exc)) from None
    except ReadError as exc:
        status = 422
        raise ApiError(422, str(exc)) from None
    except PixdexError as exc:
        status = 400
        raise ApiError(400, str(exc)) from None
    except asyncio.CancelledError:
        status = 499
        raise
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # The client went away mid-request (a body it never finished sending): nobody reads an answer, and
            # aiohttp drops this one quietly; re-raised, it logged a 35-line traceback.
            status = 499
            log.debug("%s %s: the client went away (%s)", request.method, display_path(request.path), exc)
            raise ApiError(499, "the client went away") from None
        log.exception("%s %s failed", request.method, display_path(request.path))
        raise ApiError(500, "internal error; see the daemon's log") from None
    finally:
        metrics.request(route, request.method, status, time.perf_counter() - start)


def _client_gone(request: web.Request) -> bool:
    """Whether the request's own connection is lost (not a connection the daemon made, to Ollama say)."""
    return request.transport is None or request.transport.is_closing()


ROUTES = (routes_status, routes_search, routes_items, routes_curation, routes_duplicates, routes_timeline,
          routes_library, webpage)  # each module's `add_routes` (daemon/openapi.json documents them all)


def create_app(ctx: Context) -> web.Application:
    limit = int(ctx.config.server.max_upload_mb * 1024 * 1024) + 64 * 1024
    app = web.Application(middlewares=[in_progress, errors, guard], client_max_size=limit)
    app[CONTEXT] = ctx
    for routes in ROUTES:
        routes.add_routes(app)
    return app
