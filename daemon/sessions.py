"""Browser sessions for the web page: one-time login links, then an HttpOnly cookie.

A browser cannot send a bearer header when it opens a page, so `pixdex open` asks the daemon (over
the Unix socket, or with a token) for a *ticket*: a random one-time value, valid for a minute (ten
for a phone's QR code), carrying the caller's scope. `GET /login?ticket=…` spends it and sets a
session cookie (HttpOnly, SameSite=Strict, Path=/); the session sees what the ticket's caller saw.
A used or expired ticket is useless; a session made through a token ends when the token is revoked.
Tickets live in memory only; sessions are also kept in `$XDG_STATE_HOME/pixdex/web-sessions.json`
(0600, by their hash: the file holds no cookie), so a browser stays logged in across a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pixdex.indexer.files import atomic_write

log = logging.getLogger(__name__)
COOKIE = "pixdex_session"
TICKET_SECONDS = 60.0
SESSION_SECONDS = 30 * 24 * 3600.0
MAX_SESSIONS = 1000


@dataclass(frozen=True)
class Grant:
    """What a ticket or a session may see: every collection (None) or the named ones."""

    collections: tuple[str, ...] | None
    label: str = ""
    token_id: str | None = None  # the bearer token it came from (None: the Unix socket): revoking it ends this


class Sessions:
    """Tickets (monotonic clock, memory) and sessions (wall clock, memory and `path` when given)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._tickets: dict[str, tuple[Grant, float]] = {}
        self._sessions: dict[str, tuple[Grant, float]] = self._read() if path is not None else {}
        self._lock = threading.Lock()

    def ticket(self, grant: Grant, seconds: float = TICKET_SECONDS) -> str:
        value = secrets.token_urlsafe(32)
        with self._lock:
            self._forget_expired()
            self._tickets[_key(value)] = (grant, time.monotonic() + seconds)
        return value

    def spend(self, ticket: str) -> str | None:
        """A new session id for a valid ticket (which is gone from then on), else None."""
        with self._lock:
            self._forget_expired()
            found = self._tickets.pop(_key(ticket), None)
            if found is None:
                return None
            session = secrets.token_urlsafe(32)
            self._sessions[_key(session)] = (found[0], time.time() + SESSION_SECONDS)
            while len(self._sessions) > MAX_SESSIONS:  # the oldest go first
                self._sessions.pop(next(iter(self._sessions)))
            self._write()
            return session

    def grant(self, session: str | None) -> Grant | None:
        if not session:
            return None
        with self._lock:
            found = self._sessions.get(_key(session))
            return found[0] if found is not None and found[1] >= time.time() else None

    def end(self, session: str | None) -> None:
        with self._lock:
            if self._sessions.pop(_key(session or ""), None) is not None:
                self._write()

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for value in [v for v, (_, until) in self._tickets.items() if until < now]:
            del self._tickets[value]
        now = time.time()
        expired = [v for v, (_, until) in self._sessions.items() if until < now]
        for value in expired:
            del self._sessions[value]
        if expired:
            self._write()

    # The file ------------------------------------------------------------------------------------
    def _read(self) -> dict[str, tuple[Grant, float]]:
        assert self.path is not None
        try:
            rows = json.loads(self.path.read_text())["sessions"]
            found = {str(r["key"]): (Grant(tuple(r["collections"]) if r["collections"] is not None else None,
                                           str(r["label"]), r["token_id"]), float(r["until"])) for r in rows}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: cannot read the web page sessions (%s); browsers log in again with `pixdex open`",
                        self.path, exc)
            return {}
        now = time.time()
        return {k: v for k, v in found.items() if v[1] >= now}

    def _write(self) -> None:
        if self.path is None:
            return
        rows = [{"key": k, "collections": list(g.collections) if g.collections is not None else None,
                 "label": g.label, "token_id": g.token_id, "until": until}
                for k, (g, until) in self._sessions.items()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(self.path, json.dumps({"sessions": rows}).encode(), new_mode=0o600)
        except OSError as exc:  # a full disk: the sessions still work until the daemon stops
            log.warning("%s: cannot keep the web page sessions (%s); they last until pixdex stops", self.path, exc)


def _key(secret: str) -> str:
    """Secrets are kept by their hash: a lookup reveals nothing about a stored value through its timing,
    and the file of sessions holds nothing a browser could present."""
    return hashlib.sha256(secret.encode()).hexdigest()
