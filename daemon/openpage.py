"""`pixdex open`: the web page in a browser, logged in by a one-time link the daemon makes.

    pixdex open                          the page
    pixdex open beach at night           … searching for that
    pixdex open --similar A.jpg B.jpg    … showing images like these (what the file managers' actions run)
    pixdex open --print-url              print the link instead (it works once, for a minute)
    pixdex open --lan [--only NAME]      a link for a phone on the same network, as a QR code (server.lan)

File managers run it without a terminal: with `--notify` a problem (no daemon, a file that is not
indexed) is also shown as a desktop notification, when `notify-send` is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

from pixdex.daemon.client import Client
from pixdex.indexer.collections import all_collections
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config


def page_path(query: str, similar_ids: list[int], narrow: bool = False) -> str:
    if similar_ids:
        wanted = {"similar": ",".join(map(str, similar_ids)), **({"narrow": "1"} if narrow else {})}
        return "/?" + urllib.parse.urlencode(wanted)
    return "/?" + urllib.parse.urlencode({"q": query}) if query else "/"


MAX_IMAGES = 16  # what GET /similar takes at once


def indexed_ids(config: Config, images: list[Path]) -> list[int]:
    """The catalog ids of these files (read-only); anything else is a one-line error that says why."""
    from pixdex.indexer.catalog import Catalog

    if len(images) > MAX_IMAGES:
        raise PixdexError(f"{len(images)} images selected; images like at most {MAX_IMAGES} at once can be shown")
    if not config.layout.exists():
        raise PixdexError(f"nothing is indexed in {config.data_dir} yet; `pixdex serve` indexes the watched folders")
    catalog = Catalog(config.layout.catalog, read_only=True)
    try:
        roots = [c.path.rstrip(b"/") + b"/" for c in all_collections(config, catalog)]
        ids = []
        for image in images:
            real = os.fsencode(os.path.realpath(image))
            row = catalog.by_path(real)
            if row is not None and row.state == "done":
                ids.append(row.id)
                continue
            if os.path.isdir(image):
                raise PixdexError(f"{image}: a folder; select image files (or search in it: `folder:{image}`)")
            if row is not None and row.state == "failed":
                raise PixdexError(f"{image}: could not be indexed: {row.reason}")
            if not any(real.startswith(root) for root in roots):
                raise PixdexError(f"{image}: not in a watched folder (`pixdex watch list`); `pixdex similar {image}` "
                                  "searches by it without indexing it")
            raise PixdexError(f"{image}: not indexed yet; `pixdex reindex {image}` puts it first in the queue")
        return ids
    finally:
        catalog.close()


def open_page(config: Config, words: list[str], similar: bool, narrow: bool, lan: bool, only: list[str] | None,
              print_url: bool) -> str:
    """Ask the daemon for a login link to the page and open it (or return it for printing)."""
    client = Client.connect(config.socket_path, config.data_dir)
    if client is None:
        raise PixdexError(f"no pixdex daemon answers on {config.socket_path} for {config.data_dir}: the web page "
                          "is served by it; start `pixdex serve` (or `systemctl --user start pixdex`)")
    if similar and not words:
        raise PixdexError("--similar needs at least one image file")
    ids = indexed_ids(config, [Path(w) for w in words]) if similar else []
    body: dict[str, object] = {"next": page_path("" if similar else " ".join(words), ids, narrow), "lan": lan}
    if only:
        body["only"] = only
    url = str(client.post("/login/ticket", body)["url"])
    if not print_url and not lan:
        launch(config, url, check=2.0)
    return url


def launch(config: Config, target: str, check: float = 0.0) -> None:
    """Open a link, a file or a folder with `desktop.opener`, detached. With `check`, wait that long for an
    opener that fails at once (xdg-open with no browser exits 3) and say so; one still running has opened it."""
    words = config.desktop.opener.split()
    program = shutil.which(words[0]) if words else None
    if program is None:
        raise PixdexError(f"cannot open {target}: {config.desktop.opener!r} is not installed (set desktop.opener)")
    opener = subprocess.Popen([program, *words[1:], target], start_new_session=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if check:
        try:
            code = opener.wait(check)
        except subprocess.TimeoutExpired:
            return
        if code != 0:
            raise PixdexError(f"{config.desktop.opener} could not open it (exit {code}); open this link in a browser "
                              f"yourself (it works once): {target}")


def notify(message: str) -> None:
    """A desktop notification, when there is a notifier (file managers show no terminal)."""
    program = shutil.which("notify-send")
    if program is not None:
        subprocess.run([program, "--app-name=pixdex", "pixdex", message], check=False, timeout=10,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"pixdex: {message}", file=sys.stderr)
