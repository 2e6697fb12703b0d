"""The commands about the library itself: `pixdex status`, `failures`, `pause`, `resume`, `reindex`, `watch`
(add, remove, list), `reload`, `serve` and `config`. Each is written once against `core_api.Library`: the
daemon's when one answers for this data directory, the data directory's own when none does."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pixdex.daemon.commands.connect import (
    EXIT_OK,
    daemon_client,
    library_for,
    other_daemon,
)
from pixdex.daemon.commands.output import notifying, print_status, printable
from pixdex.daemon.openpage import notify
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.paths import display_path
from pixdex.indexer.settings import Config, describe_settings


def add_parsers(sub: Any) -> None:
    status = sub.add_parser("status", help="counts, models, index sizes and paths")
    status.add_argument("--json", action="store_true")
    failures = sub.add_parser("failures", help="files that could not be indexed, with the reason")
    failures.add_argument("--json", action="store_true")

    config = sub.add_parser("config", help="every setting with its default and help")
    serve = sub.add_parser("serve", help="run the daemon: watch the folders, keep the indexes true, answer queries")
    reload = sub.add_parser("reload", help="make the running daemon re-read its config (as SIGHUP does)")
    pause = sub.add_parser("pause", help="pause indexing (kept across restarts); queries go on")
    resume = sub.add_parser("resume", help="resume indexing")
    reindex = sub.add_parser("reindex", help="index these files or folders again, ahead of everything else")
    reindex.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="default: every watched folder")
    reindex.add_argument("--notify", action="store_true", help="also say it in a desktop notification (file managers)")
    watch = sub.add_parser("watch", help="add, remove or list watched folders (collections)")
    wsub = watch.add_subparsers(dest="watch_command", required=True, metavar="ACTION")
    wadd = wsub.add_parser("add", help="watch a folder; --name names the collection (in:NAME in queries)")
    wadd.add_argument("dir", type=Path, metavar="DIR")
    wadd.add_argument("--name", help="collection name (default: the folder's name)")
    wremove = wsub.add_parser("remove", help="stop watching a folder added with `watch add` (by name or path)")
    wremove.add_argument("dir", metavar="DIR|NAME")
    wlist = wsub.add_parser("list", help="watched folders, their names and how they are watched")
    wlist.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)
    failures.set_defaults(handler=cmd_failures)
    config.set_defaults(handler=cmd_config)
    serve.set_defaults(handler=cmd_serve)
    reload.set_defaults(handler=cmd_reload)
    pause.set_defaults(handler=cmd_pause)
    resume.set_defaults(handler=cmd_resume)
    reindex.set_defaults(handler=cmd_reindex)
    watch.set_defaults(handler=cmd_watch)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    info = library_for(config).status()
    if "daemon" not in info:
        other = other_daemon(config)
        if other:
            info["other_daemon"] = other
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        print_status(info)
    return EXIT_OK

def cmd_failures(args: argparse.Namespace, config: Config) -> int:
    rows = library_for(config).failures()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for row in rows:
            print(f"{printable(row['path'])}: {row['kind']}: {row['reason']}")
        if not rows:
            print("no failures", file=sys.stderr)
    return EXIT_OK


def cmd_pause(args: argparse.Namespace, config: Config) -> int:
    return _set_paused(config, True)


def cmd_resume(args: argparse.Namespace, config: Config) -> int:
    return _set_paused(config, False)


def _set_paused(config: Config, paused: bool) -> int:
    library = library_for(config)
    library.pause(paused)
    where = " (no daemon runs; it starts paused)" if paused and not library.live else ""
    print(("indexing paused" if paused else "indexing resumed") + where)
    return EXIT_OK


def cmd_reindex(args: argparse.Namespace, config: Config) -> int:
    if args.notify:
        return notifying(lambda: _reindex(args, config))
    return _reindex(args, config)


def _reindex(args: argparse.Namespace, config: Config) -> int:
    paths = [os.path.abspath(p) for p in args.paths]
    for path in paths:
        if not os.path.exists(path):
            raise PixdexError(f"{path}: no such file or folder")
    library = library_for(config)
    count = library.reindex(paths)
    if count == 0 and paths:
        raise PixdexError(f"{', '.join(display_path(p) for p in paths)}: no indexed image there (pixdex indexes "
                          "regular image files; `pixdex failures` lists those it could not read)")
    if not library.live:
        print(f"{count} image(s) queued; no daemon runs: `pixdex serve` or `pixdex index` will index them")
        return EXIT_OK
    print(f"{count} image(s) queued ahead of everything else")
    if args.notify:
        notify(f"{count} image(s) queued to be described and tagged again, ahead of everything else")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, config: Config) -> int:
    library = library_for(config)
    if args.watch_command == "list":
        rows = library.watches()
        if args.json:
            print(json.dumps(rows, indent=2, ensure_ascii=False))
        for row in [] if args.json else rows:
            print(f"{row['name']}: {printable(row['path'])} ({row['source']}; {row['watch']}"
                  + (f": {row['why']}" if row.get("why") else "") + ")")
        return EXIT_OK
    if args.watch_command == "add":
        added = library.watch_add(os.path.abspath(args.dir), args.name)
        print(f"watching {printable(added['path'])} as {added['name']} (query with in:{added['name']})")
        return EXIT_OK
    removed = library.watch_remove(args.dir if "/" not in args.dir else os.path.abspath(args.dir))
    print(f"stopped watching {printable(removed['path'])} ({removed['name']}); its images left the index, "
          "the files and sidecars stay")
    return EXIT_OK


def cmd_reload(args: argparse.Namespace, config: Config) -> int:
    client = daemon_client(config)
    if client is None:
        raise PixdexError(f"no daemon answers on {config.socket_path}; the config is read when `pixdex serve` starts")
    pid = int(client.get("/health")["pid"])
    os.kill(pid, signal.SIGHUP)
    print(f"asked the daemon (pid {pid}) to re-read its config; its log says whether it was taken or refused")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    # Late: the daemon's modules (aiohttp, the query side) load only for the command that runs it.
    from pixdex.daemon.logs import setup_logging
    from pixdex.daemon.server import serve

    setup_logging(args.verbose)
    return serve(config, args.config)


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    section = ""
    for key, default, help_text in describe_settings():
        name, _, setting = key.partition(".")
        if name != section:
            print(f"\n[{name}]")
            section = name
        print(f"# {help_text}\n{setting} = {json.dumps(default)}")
    return EXIT_OK
