"""Browser sessions for the web page: one-time login links, then an HttpOnly cookie.

A browser cannot send a bearer header when it opens a page, so `pixdex open` asks the daemon (over
the Unix socket, or with a token) for a *ticket*: a random one-time value, valid for a minute (ten
for a phone's QR code), carrying the caller's scope. `GET /login?ticket=…` spends it and sets a
session cookie (HttpOnly, SameSite=Strict, Path=/); the session sees what the ticket's caller saw.
A used or expired ticket is useless; a session made through a token ends when the token is revoked.
Sessions live in the daemon's memory: a restart asks for a new `pixdex open`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

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
    def __init__(self) -> None:
        self._tickets: dict[str, tuple[Grant, float]] = {}
        self._sessions: dict[str, tuple[Grant, float]] = {}
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
            self._sessions[_key(session)] = (found[0], time.monotonic() + SESSION_SECONDS)
            while len(self._sessions) > MAX_SESSIONS:  # the oldest go first
                self._sessions.pop(next(iter(self._sessions)))
            return session

    def grant(self, session: str | None) -> Grant | None:
        if not session:
            return None
        with self._lock:
            found = self._sessions.get(_key(session))
            return found[0] if found is not None and found[1] >= time.monotonic() else None

    def end(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(_key(session or ""), None)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for table in (self._tickets, self._sessions):
            for value in [v for v, (_, until) in table.items() if until < now]:
                del table[value]


def _key(secret: str) -> str:
    """Secrets are kept by their hash: a lookup reveals nothing about a stored value through its timing."""
    return hashlib.sha256(secret.encode()).hexdigest()
