"""`pixdex duplicates`: groups of copies and near-copies of one photo, each with the copy to keep and why —
through the daemon when one answers (GET /duplicates), else over the data directory (`query.duplicates`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pixdex.daemon.commands.connect import EXIT_OK, EXIT_SOME_FAILED, daemon_client
from pixdex.daemon.commands.output import printable
from pixdex.indexer.paths import as_text
from pixdex.indexer.settings import Config

THRESHOLD_MAX = 128  # as query.duplicates.MAX_BITS (not imported: the client path loads no numpy)


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser("duplicates", help="copies and near-copies of the same photo, with the one to keep")
    parser.add_argument("filters", nargs="*", help="filters only, e.g. in:holidays folder:~/Pictures after:2020")
    parser.add_argument("--json", action="store_true", help='print {"groups": [{"items", "keeper", "why"}]} as JSON')
    parser.add_argument("--threshold", type=int, default=None, metavar="BITS",
                        help="how many of the 256 hash bits two copies may differ in (default 64; a 3%% crop moves "
                             "up to ~56, two different photos ~100 and more)")
    parser.add_argument("--similar", action="store_true",
                        help="also list similar shots (bursts, the same scene), from a real CLIP model's embeddings")
    parser.set_defaults(handler=cmd_duplicates)


def cmd_duplicates(args: argparse.Namespace, config: Config) -> int:
    from pixdex.query.parse import QueryError

    if args.threshold is not None and not 0 <= args.threshold <= THRESHOLD_MAX:
        raise QueryError(f"--threshold {args.threshold} is out of range; use 0 to {THRESHOLD_MAX} (bits of 256)")
    filters = as_text(" ".join(args.filters))
    client = daemon_client(config)
    if client is not None:
        data = dict(client.get("/duplicates", q=filters or None, threshold=args.threshold,
                               similar="1" if args.similar else None, cwd=os.getcwd()))
    else:
        data = _offline(config, filters, args)
    return print_groups(data, args.json)


def _offline(config: Config, filters: str, args: argparse.Namespace) -> dict[str, Any]:
    # Late: the query side (numpy, scipy, tantivy) loads only without a daemon.
    from pathlib import Path

    from pixdex.daemon.offline import open_search
    from pixdex.query.duplicates import DEFAULT_BITS, Limits, duplicates

    limits = Limits(bits=DEFAULT_BITS if args.threshold is None else args.threshold)
    return duplicates(open_search(config), filters, limits, args.similar, Path.cwd())


def print_groups(data: dict[str, Any], as_json: bool) -> int:
    for note in data.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    groups = data["groups"]
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for n, group in enumerate(groups, 1):
            print(f"group {n}: keep #{group['keeper']} — {group['why']}")
            for item in group["items"]:
                mark = "*" if item["id"] == group["keeper"] else " "
                size = f"{item['width']}×{item['height']}  {item['size'] // 1024:6d} KB"
                print(f"  {mark} {size}  {printable(item['path'])}")
        for n, group in enumerate(data.get("similar", []), 1):
            print(f"similar shots {n}:")
            for item in group["items"]:
                print(f"    {printable(item['path'])}")
    if not groups:
        print(f"no duplicates among {data.get('compared', 0)} image(s)", file=sys.stderr)
    return EXIT_OK if groups else EXIT_SOME_FAILED
