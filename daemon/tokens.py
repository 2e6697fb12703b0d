"""Bearer tokens for the loopback TCP listener, kept in `$XDG_STATE_HOME/pixdex/tokens.json` (0600).

The first token is made on the daemon's first start and sees everything; `pixdex token --new
--only NAME` makes one limited to some collections (a phone or a script then sees only those).
`pixdex token --list` shows each one's id (a hash of it, not the token), scope and label, and
`pixdex token --revoke ID|LABEL` ends one: the daemon re-reads the file on the next request, so the
token and the web page sessions logged in with it stop working at once.
The Unix socket needs no token: its 0600 mode in a 0700 folder and the peer's uid guard it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from pixdex.indexer.errors import PixdexError


@dataclass(frozen=True)
class Token:
    secret: str
    collections: tuple[str, ...] | None  # None: every collection
    label: str = ""

    @property
    def id(self) -> str:
        """What names the token in lists and revocations without revealing it."""
        return hashlib.sha256(self.secret.encode()).hexdigest()[:10]

    def as_dict(self) -> dict[str, object]:
        return {"token": self.secret, "collections": list(self.collections) if self.collections is not None else None,
                "label": self.label}

    def listing(self) -> Listing:
        return {"id": self.id, "collections": list(self.collections) if self.collections is not None else None,
                "label": self.label}


class Listing(TypedDict):
    """A token as `pixdex token --list` shows it: never the secret."""

    id: str
    collections: list[str] | None
    label: str


class Tokens:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens: list[Token] = []
        self._stamp: tuple[int, int] | None = None

    def load(self, create: bool = False) -> list[Token]:
        """The tokens on disk (re-read when the file changed); with `create`, the first one is made."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if not create:
                return []
            self.add(None, "full access (made on first start)")
            return self._tokens
        if (st.st_mtime_ns, st.st_size) != self._stamp:
            try:
                raw = json.loads(self.path.read_text())
                self._tokens = [Token(t["token"], tuple(t["collections"]) if t.get("collections") is not None else None,
                                      t.get("label", "")) for t in raw["tokens"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise PixdexError(f"{self.path}: cannot read the tokens ({exc}); move it away and restart pixdex "
                                  "to make a new one") from exc
            self._stamp = (st.st_mtime_ns, st.st_size)
        return self._tokens

    def find(self, presented: str) -> Token | None:
        if not presented.isascii():  # tokens are URL-safe base64; a header value not UTF-8 holds lone surrogates
            return None
        for token in self.load():
            if hmac.compare_digest(token.secret.encode(), presented.encode()):
                return token
        return None

    def alive(self, token_id: str) -> bool:
        """Whether the token of this id is still on file (a web session made with a revoked one is not)."""
        return any(t.id == token_id for t in self.load())

    def revoke(self, which: str) -> Token:
        """Remove the one token whose id starts with `which` (4 characters at least) or whose label is `which`."""
        tokens = self.load()
        wanted = which.strip()
        if not wanted:
            raise PixdexError("--revoke needs a token's id or label; `pixdex token --list` shows them")
        found = [t for t in tokens if t.label == wanted]
        if not found and len(wanted) >= 4:
            found = [t for t in tokens if t.id.startswith(wanted.lower())]
        if not found:
            short = " (an id needs 4 characters at least)" if len(wanted) < 4 else ""
            raise PixdexError(f"no token has the id or label {which!r}{short}; `pixdex token --list` shows them")
        if len(found) > 1:
            raise PixdexError(f"{len(found)} tokens match {which!r} ({', '.join(t.id for t in found)}); "
                              "give more of the id")
        self._write([t for t in tokens if t is not found[0]])
        return found[0]

    def add(self, collections: tuple[str, ...] | None, label: str = "") -> Token:
        existing = self.load() if self.path.exists() else []
        if label and any(t.label == label for t in existing):
            raise PixdexError(f"a token is labelled {label!r} already; give another label (`pixdex token --list`)")
        token = Token(secrets.token_urlsafe(32), collections, label)
        tokens = [*existing, token]
        self._write(tokens)
        return token

    def _write(self, tokens: list[Token]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp = tempfile.mkstemp(prefix=".pixdex-tmp-", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"tokens": [t.as_dict() for t in tokens]}, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            os.unlink(temp)
            raise
        self._tokens = tokens
        st = self.path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size)
