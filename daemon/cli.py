"""The `pixdex` command: the parser, the config each command gets, and the one place that turns pixdex's typed
errors into a one-line message on stderr and an exit status — 0 fine (an index run whose bad files were
recorded is fine: `pixdex failures` lists them), 1 nothing found, 2 bad input or setup, 130 interrupted.

The commands live in `pixdex.daemon.commands`, one module per family; when a daemon answers for this data
directory they ask it (the client stays light: no numpy, no index opened), else they work on the data
directory, with the same output."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pixdex.daemon.commands import access, duplicates, indexing, library, models, searching
from pixdex.daemon.commands.connect import EXIT_OK, EXIT_USAGE
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config, load_config, load_config_leniently


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixdex", description="Local image tagging, indexing and hybrid search.")
    parser.add_argument("--config", type=Path, help="config file (default: $XDG_CONFIG_HOME/pixdex/config.toml)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (searching, duplicates, indexing, library, access, models):
        family.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_negative_k(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = _load_config(args)
        return int(args.handler(args, config))
    except PixdexError as exc:  # ConfigError, QueryError, CatalogError, ModelError, ReadError, …
        print(f"pixdex: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pixdex: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pixdex status | head -1`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# Commands that only read, or ask the daemon: a setting the file gets wrong is left at its default, with a
# warning, so they keep working beside a daemon that refused the file and kept its last good config.
LENIENT = {"search", "similar", "duplicates", "status", "failures", "pause", "resume", "open", "token", "dbus"}


def _load_config(args: argparse.Namespace) -> Config:
    if args.command not in LENIENT and not (args.command == "watch" and args.watch_command == "list"):
        return load_config(args.config)
    config, problems = load_config_leniently(args.config)
    for problem in problems:
        print(f"pixdex: warning: {problem} (left at its default for this command; a running daemon keeps its "
              "last good config — fix the file, then `pixdex reload`)", file=sys.stderr)
    return config


QUERY_COMMANDS = {"search", "run"}


QUERY_OPTIONS = {"-k": True, "--json": False, "-0": False, "-h": False, "--help": False}  # option: takes a value


def _negative_k(argv: list[str]) -> list[str]:
    """Arguments argparse would misread, made plain: `-k -1` reaches the range check (one clear message;
    with a `-0` option defined, argparse takes `-1` for an option), and a query that starts with `-`
    (`pixdex search -tag:cat`) is the query, not an unknown option."""
    out: list[str] = []
    words: list[str] = []
    command = None
    args = iter(argv)
    for arg in args:
        if command is None:
            out.append(arg)
            if arg in QUERY_COMMANDS and (len(out) == 1 or out[-2] != "--config"):
                command = arg
            continue
        option, _, _ = arg.partition("=")
        if option in QUERY_OPTIONS:
            out.append(arg)
            if QUERY_OPTIONS[option] and "=" not in arg:
                out[-1] = f"{arg}={next(args, '')}"
        elif arg == "--":
            words += list(args)
        else:
            words.append(arg)
    return out + (["--", " ".join(words)] if words else [])
