"""Which library a command talks to: the daemon on this config's socket, when it serves this data directory
(`daemon_client`, `library_for`), else the data directory itself; and the exit statuses."""

from __future__ import annotations

from typing import Any

from pixdex.daemon.client import Client
from pixdex.daemon.core_api import Library
from pixdex.daemon.remote import DaemonLibrary
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def library_for(config: Config) -> Library:
    """The daemon's library when one answers for this data directory, else the data directory's own."""
    client = daemon_client(config)
    if client is not None:
        return DaemonLibrary(client)
    # Late: the catalog's modules load only when no daemon answers.
    from pixdex.daemon.offline import OfflineLibrary

    return OfflineLibrary(config)


def daemon_client(config: Config) -> Any:
    return Client.connect(config.socket_path, config.data_dir)


def other_daemon(config: Config) -> dict[str, Any] | None:
    """The daemon on this config's socket when it serves another data directory."""
    client = Client.connect(config.socket_path)
    try:
        return dict(client.get("/health", brief="1")) if client is not None else None
    except Exception:  # noqa: BLE001 - it only adds a note
        return None


def no_daemon(config: Config, what: str) -> None:
    client = daemon_client(config)
    if client is not None:
        pid = client.get("/health")["pid"]
        raise PixdexError(f"the pixdex daemon (pid {pid}) is running; stop it first (`systemctl --user stop pixdex`, "
                          f"or Ctrl-C on `pixdex serve`), then run `pixdex {what}`")


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True
