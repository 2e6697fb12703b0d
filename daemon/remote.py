"""`DaemonLibrary`: the command line's `Library` when a daemon answers — its HTTP API over the Unix socket.
It stays light (a desktop search box may run `pixdex search` per keystroke): the client and nothing else."""

from __future__ import annotations

from typing import Any

from pixdex.daemon.client import Client


class DaemonLibrary:
    live = True

    def __init__(self, client: Client) -> None:
        self.client = client

    def status(self) -> dict[str, Any]:
        return dict(self.client.get("/status"))

    def failures(self) -> list[dict[str, str]]:
        return list(self.client.get("/failures"))

    def watches(self) -> list[dict[str, Any]]:
        return list(self.client.get("/watches"))

    def pause(self, paused: bool) -> None:
        self.client.post("/pause" if paused else "/resume")

    def reindex(self, paths: list[str]) -> int:
        return int(self.client.post("/reindex", {"paths": paths})["queued"])

    def watch_add(self, path: str, name: str | None) -> dict[str, Any]:
        return dict(self.client.post("/watches", {"path": path, "name": name}))

    def watch_remove(self, key: str) -> dict[str, Any]:
        return dict(self.client.request("DELETE", f"/watches/{key}"))
