"""`pixdex search`, `similar` and `run`: queries, through the daemon when one answers (the client stays light:
no model, no index opened), else over the data directory."""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from pixdex.daemon.client import DaemonError, read_upload
from pixdex.daemon.commands.connect import EXIT_OK, daemon_client, is_utf8
from pixdex.daemon.commands.indexing import index_folders
from pixdex.daemon.commands.output import print_results, results_dict, summary_line
from pixdex.indexer.paths import as_text
from pixdex.indexer.settings import Config


def add_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="index the configured folders, then search (interactive on a terminal)")
    run.add_argument("query", nargs="?", help="one-shot query to run after indexing (all remaining words)")
    run.add_argument("-k", type=int, help="results to show")

    search = sub.add_parser("search", help="hybrid text + vector search")
    search.add_argument("query", help='e.g. beach + sunset - people tag:dog -tag:cat after:2020-01-01 '
                                      '(all remaining words; quotes optional)')
    _result_options(search)

    similar = sub.add_parser("similar", help="images that look like the given ones")
    similar.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    similar.add_argument("--filter", default="", help='filters, e.g. "folder:~/Pictures ext:jpg"')
    _result_options(similar)
    run.set_defaults(handler=cmd_run)
    search.set_defaults(handler=cmd_search)
    similar.set_defaults(handler=cmd_similar)


def _result_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", type=int, help="results to show (default: search.k)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("-0", dest="null", action="store_true", help="print only paths, NUL-separated")


def cmd_search(args: argparse.Namespace, config: Config) -> int:
    args.query = as_text(args.query)  # `pixdex search $'caf\xe9'`: the words as the index holds such names
    client = daemon_client(config)
    if client is not None:
        if not args.query.strip() or len(args.query) > config.server.max_query_chars:
            _refuse(args.query, config)
        data = client.get("/search", q=args.query, k=args.k, cwd=os.getcwd(), raw="1" if args.null else None)
        return print_results(data, args)
    from pixdex.daemon.offline import open_search

    return print_results(results_dict(open_search(config).search(args.query, args.k), args.null), args)


def _refuse(query: str, config: Config) -> NoReturn:
    """A query the daemon would refuse, said as without a daemon (not as its HTTP parameter `q`)."""
    from pixdex.query.parse import QueryError, nothing_to_look_for  # late: it imports tantivy

    if not query.strip():
        raise QueryError(nothing_to_look_for(query))
    raise QueryError(f"the query is {len(query)} characters long; at most {config.server.max_query_chars} are "
                     "allowed (server.max_query_chars)")


def cmd_similar(args: argparse.Namespace, config: Config) -> int:
    args.filter = as_text(args.filter) if args.filter is not None else None
    client = daemon_client(config)
    if client is not None:
        return print_results(_similar_via(client, args, int(config.server.max_upload_mb * 2**20)), args)
    from pixdex.daemon.offline import open_search

    results = open_search(config).similar(args.images, args.k, args.filter)
    return print_results(results_dict(results, args.null), args)


def _similar_via(client: Any, args: argparse.Namespace, max_bytes: int) -> dict[str, Any]:
    """One indexed image: the daemon looks it up; otherwise the images are uploaded as a query (regular files
    of at most `max_bytes` each, as the daemon takes them)."""
    if len(args.images) == 1:
        path = os.fsencode(os.path.abspath(args.images[0]))
        where = {"path": path.decode()} if is_utf8(path) else {"path_b64": base64.b64encode(path).decode()}
        try:
            return dict(client.get("/similar", **where, k=args.k, filter=args.filter, raw="1" if args.null else None))
        except DaemonError as exc:
            if exc.status != 404:
                raise
    files = [("image", os.path.basename(image), read_upload(os.path.realpath(image), max_bytes))  # named as
             for image in args.images]  # without a daemon: the link's target
    fields = {"q": args.filter} if args.filter else {}
    if args.k is not None:
        fields["k"] = str(args.k)
    return dict(client.upload("/search", fields, files))


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.offline import open_search
    from pixdex.query.parse import QueryError

    roots = [f for f in config.folders if f.is_dir()]
    for folder in config.folders:
        if not folder.is_dir():
            print(f"pixdex: skipping {folder}: not a folder (set library.folders in the config)", file=sys.stderr)
    if roots:
        print(summary_line(index_folders(config, roots, progress=True)), file=sys.stderr)
    service = open_search(config)
    plain = argparse.Namespace(json=False, null=False)
    if args.query:
        return print_results(results_dict(service.search(args.query, args.k), False), plain)
    if not sys.stdin.isatty():
        return EXIT_OK
    print("type a query (filters: tag: folder: ext: after: before: camera:), empty line to quit", file=sys.stderr)
    while (line := input("pixdex> ").strip()):
        try:
            print_results(results_dict(service.search(line, args.k), False), plain)
        except QueryError as exc:
            print(f"pixdex: {exc}", file=sys.stderr)
    return EXIT_OK
