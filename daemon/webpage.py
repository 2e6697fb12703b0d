"""The web page: `/` and its assets (plain HTML, CSS and JavaScript from `daemon/web/`, no build step),
the one-time login link that gives a browser its session cookie, and QR codes for opening the page on
a phone (`server.lan`).

The page talks to the same JSON API as every other client, with the same rules: a browser
without a session gets a page that says how to log in (`pixdex open`), never data. Responses
carry a strict Content-Security-Policy (scripts and styles from this origin only, no inline
script), so a file name or a keyword is text on the page, never markup.
"""

from __future__ import annotations

import io
import socket
import urllib.parse
from pathlib import Path

import psutil
import segno
from aiohttp import web

from pixdex.daemon.http_api import ApiError, Context, bad, ctx_of, json_body
from pixdex.daemon.sessions import COOKIE, SESSION_SECONDS, TICKET_SECONDS, Grant

WEB = Path(__file__).with_name("web")
ASSETS = {"app.js": "text/javascript", "curate.js": "text/javascript", "duplicates.js": "text/javascript",
          "timeline.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
LAN_TICKET_SECONDS = 600.0
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
LOGIN_HELP = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pixdex</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/app.css"></head>
<body class="login"><main><h1>pixdex</h1><p>{message}</p>
<p>On this computer, run <code>pixdex open</code>: it opens this page with a one-time login link.</p>
</main></body></html>
"""


FILES = web.AppKey("web files", dict)


def add_routes(app: web.Application) -> None:
    # Read once at start and served from memory: a reinstall under a running daemon (the README's test command
    # beside its first one) replaces or removes the files on disk.
    app[FILES] = {name: (WEB / name).read_bytes() for name in ["index.html", *ASSETS]}
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/login", login)
    app.router.add_post("/login/ticket", new_ticket)
    app.router.add_post("/logout", logout)
    app.router.add_get("/qr.svg", qr_code)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


async def page(request: web.Request) -> web.StreamResponse:
    if request.get("anonymous"):
        return _html(LOGIN_HELP.format(message="This browser is not logged in to pixdex."), 401)
    return web.Response(body=request.app[FILES]["index.html"],
                        headers={**HEADERS, "Content-Type": "text/html; charset=utf-8"})


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise ApiError(404, f"no asset {name[:40]!r}", "name")
    return web.Response(body=request.app[FILES][name],
                        headers={**HEADERS, "Content-Type": f"{ASSETS[name]}; charset=utf-8"})


async def login(request: web.Request) -> web.StreamResponse:
    """Spend a one-time ticket: set the session cookie and go on to `next` (a path of this site)."""
    ctx = ctx_of(request)
    session = ctx.sessions.spend(request.query.get("ticket", ""))
    if session is None and ctx.sessions.grant(request.cookies.get(COOKIE)) is not None:
        return web.HTTPSeeOther(_local_path(request.query.get("next", "/")), headers=HEADERS)  # logged in already
    if session is None:
        return _html(LOGIN_HELP.format(message="This login link was used already or has expired."), 403)
    response = web.HTTPSeeOther(_local_path(request.query.get("next", "/")), headers=HEADERS)
    response.set_cookie(COOKIE, session, max_age=int(SESSION_SECONDS), path="/", httponly=True, samesite="Strict")
    return response


def _local_path(raw: str) -> str:
    """Only a path on this site (no `//host`, no scheme): a login link is no open redirect."""
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme or parts.netloc or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    return raw


async def logout(request: web.Request) -> web.Response:
    ctx_of(request).sessions.end(request.cookies.get(COOKIE))
    response = web.json_response({"logged_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


async def new_ticket(request: web.Request) -> web.Response:
    """A one-time login link for the caller's own scope: `{"next": "/?q=…", "lan": false}`."""
    ctx = ctx_of(request)
    body = await json_body(request)
    unknown = set(body) - {"next", "lan", "only"}
    if unknown:
        raise bad(sorted(unknown)[0], "unknown field; allowed: next, lan, only")
    target = body.get("next", "/")
    if not isinstance(target, str) or len(target) > 4000 or _local_path(target) != target:
        raise bad("next", "next must be a path of this site, like /?q=beach (at most 4000 characters)")
    lan = body.get("lan", False)
    if not isinstance(lan, bool):
        raise bad("lan", "lan must be true or false")
    if lan and ctx.lan is None:
        raise bad("lan", "LAN access is off; set [server] lan = \"0.0.0.0\" (or this machine's address) and restart "
                         "pixdex (the listener is opened at start)")
    if not lan and ctx.tcp_port is None:
        raise bad("lan", "the web page needs the loopback TCP listener; set [server] tcp = true and restart pixdex")
    token = request["token"]
    grant = Grant(None, "socket") if token is None else Grant(token.collections, token.label, request.get("token_id"))
    only = body.get("only")
    if only is not None:  # a link that sees less than its maker (a phone: one collection)
        known = {c.name.lower(): c.name for c in ctx.core.collections}
        if not isinstance(only, list) or not only or not all(isinstance(n, str) and n.lower() in known for n in only):
            raise bad("only", f"only must list collections by name; there are: {', '.join(sorted(known.values()))}")
        names = tuple(known[n.lower()] for n in only)
        if grant.collections is not None and not {n.lower() for n in names} <= {n.lower() for n in grant.collections}:
            raise ApiError(403, "a login link cannot see more than its maker", "only")
        grant = Grant(names, f"login link for {', '.join(names)}", grant.token_id)
    seconds = LAN_TICKET_SECONDS if lan else TICKET_SECONDS
    ticket = ctx.sessions.ticket(grant, seconds)
    base = lan_base(ctx) if lan else f"http://127.0.0.1:{ctx.tcp_port}"
    url = f"{base}/login?" + urllib.parse.urlencode({"ticket": ticket, "next": target})
    return web.json_response({"url": url, "expires_in": seconds, "collections": grant.collections})


def lan_base(ctx: Context) -> str:
    assert ctx.lan is not None
    host = lan_address(ctx.lan[0])
    return f"http://{'[' + host + ']' if ':' in host else host}:{ctx.lan[1]}"


def lan_address(configured: str) -> str:
    """The address a phone reaches: the configured one, or (for 0.0.0.0) the one this machine's default
    route leaves by (no packet is sent: a UDP socket is only connected)."""
    if configured not in ("0.0.0.0", "::", ""):
        return configured
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def machine_addresses() -> set[str]:
    """This machine's own IP addresses: the Host names a LAN request may carry (no DNS names: rebinding)."""
    found: set[str] = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.add(address.address.split("%")[0])
    return found


async def qr_code(request: web.Request) -> web.Response:
    """`GET /qr.svg?text=…`: a QR code of a link (the page shows one of a LAN login link)."""
    text = request.query.get("text", "")
    if not text or len(text) > 2000:
        raise bad("text", "text is required, at most 2000 characters")
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=6, border=2, xmldecl=False)
    return web.Response(body=out.getvalue(), content_type="image/svg+xml", headers=HEADERS)


def qr_terminal(text: str) -> str:
    """The same QR code drawn for a terminal (`pixdex open --lan`)."""
    out = io.StringIO()
    segno.make(text, error="m").terminal(out, compact=True, border=2)
    return out.getvalue()
