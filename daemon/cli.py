"""The `pixdex` command: index, search, similar, status, failures, models, config, run.

Library code raises typed errors; this module is the one place that turns them into a
one-line message on stderr and an exit status: 0 fine (an index run whose bad files were recorded
is fine: `pixdex failures` lists them), 1 nothing found, 2 bad input or setup, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pixdex.indexer.settings import Config, default_config_path, describe_settings, load_config

log = logging.getLogger("pixdex")
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixdex", description="Local image tagging, indexing and hybrid search.")
    parser.add_argument("--config", type=Path, help="config file (default: $XDG_CONFIG_HOME/pixdex/config.toml)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="index the configured folders, then search (interactive on a terminal)")
    run.add_argument("query", nargs="?", help="one-shot query to run after indexing (all remaining words)")
    run.add_argument("-k", type=int, help="results to show")

    index = sub.add_parser("index", help="index folders (default: the configured ones)")
    index.add_argument("dirs", nargs="*", type=Path, metavar="DIR")
    index.add_argument("--json", action="store_true", help="print the summary as JSON")

    search = sub.add_parser("search", help="hybrid text + vector search")
    search.add_argument("query", help='e.g. beach + sunset - people tag:dog -tag:cat after:2020-01-01 '
                                      '(all remaining words; quotes optional)')
    _result_options(search)

    similar = sub.add_parser("similar", help="images that look like the given ones")
    similar.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    similar.add_argument("--filter", default="", help='filters, e.g. "folder:~/Pictures ext:jpg"')
    _result_options(similar)

    status = sub.add_parser("status", help="counts, models, index sizes and paths")
    status.add_argument("--json", action="store_true")
    failures = sub.add_parser("failures", help="files that could not be indexed, with the reason")
    failures.add_argument("--json", action="store_true")

    sub.add_parser("config", help="every setting with its default and help")

    models = sub.add_parser("models", help="install or list models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    standin = msub.add_parser("standin", help="write small stand-in models (meaningless results; for trying and testing)")
    standin.add_argument("--dir", type=Path, help="model directory (default: the configured one)")
    export = msub.add_parser("export", help="export an open_clip model to ONNX (needs the export extra and its weights)")
    export.add_argument("name", help="open_clip model name, e.g. ViT-B-32")
    export.add_argument("--pretrained", required=True, help="open_clip pretrained tag, e.g. openai")
    export.add_argument("--dir", type=Path, help="model directory (default: the configured one)")
    msub.add_parser("list", help="models present in the model directory")
    return parser


def _result_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", type=int, help="results to show (default: search.k)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("-0", dest="null", action="store_true", help="print only paths, NUL-separated")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_negative_k(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from pixdex.indexer.errors import PixdexError

    try:
        config = load_config(args.config)
        return int(COMMANDS[args.command](args, config))
    except PixdexError as exc:  # ConfigError, QueryError, CatalogError, ModelError, ReadError, …
        print(f"pixdex: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pixdex: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pixdex status | head -1`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


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


# Commands ------------------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace, config: Config) -> int:
    roots = [Path(os.path.abspath(d)) for d in args.dirs] or config.folders
    _check_roots(roots)
    summary = index_folders(config, roots, progress=not args.json)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(summary_line(summary))
        for path, reason in summary["failures"][:20]:
            print(f"  failed: {path}: {reason}", file=sys.stderr)
        if len(summary["failures"]) > 20:
            print(f"  … and {len(summary['failures']) - 20} more: see `pixdex failures`", file=sys.stderr)
        for path, reason in summary["folder_errors"]:
            print(f"  skipped folder: {path}: {reason}", file=sys.stderr)
    return EXIT_OK


def index_folders(config: Config, roots: list[Path], progress: bool) -> dict[str, Any]:
    """Scan → queue → drain, as a thin client of the indexing core."""
    from tqdm import tqdm

    from pixdex.indexer.core import Indexer

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends a run as Ctrl-C does: finished work is committed

    with Indexer(config) as indexer:
        start = indexer.stats.committed
        try:
            report = indexer.scan(roots)
            bar = tqdm(total=report.queued, unit="img", disable=not (progress and os.isatty(2)), leave=False,
                       desc="indexing")
            try:
                indexer.drain(lambda s: bar.update(s.committed + s.failed + s.touched - bar.n))
            finally:
                bar.close()
        except KeyboardInterrupt:
            indexer.close()  # commits what is finished
            done = indexer.stats.committed - start
            print(f"pixdex: interrupted: {done} image(s) were committed; the rest stays queued and is "
                  "indexed at the next `pixdex index`", file=sys.stderr)
            raise SystemExit(130) from None
        return summary_dict(report, indexer.stats)


def _check_roots(roots: list[Path]) -> None:
    from pixdex.indexer.errors import PixdexError

    for root in roots:
        if not root.exists():
            raise PixdexError(f"{root}: no such folder; pass existing folders or set library.folders in "
                              f"{default_config_path(os.environ)}")
        if not root.is_dir():
            raise PixdexError(f"{root}: not a folder; pass the folder that holds it")
        if not os.access(root, os.R_OK | os.X_OK):
            raise PixdexError(f"{root}: permission denied; pixdex needs to read this folder")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def summary_dict(report: Any, stats: Any) -> dict[str, Any]:
    return {
        "new": report.new, "changed": report.changed - stats.touched, "unchanged": report.unchanged + stats.touched,
        "moved": report.moved, "removed": report.removed, "failed": stats.failed + report.failed_before,
        "decoded": stats.decoded, "embedded": stats.embedded, "tagged": stats.tagged,
        "inference_calls": stats.inference_calls,
        "seconds": {k: round(v, 3) for k, v in stats.seconds.items()},
        "resumed": report.resumed, "sidecar_failures": stats.sidecar_failures + len(report.sidecar_errors),
        "failures": stats.failures, "folder_errors": report.folder_errors,
        "sidecar_errors": report.sidecar_errors + stats.sidecar_errors,
    }


def summary_line(s: dict[str, Any]) -> str:
    line = (f"{s['new']} new, {s['changed']} changed, {s['unchanged']} unchanged, {s['moved']} moved, "
            f"{s['removed']} removed, {s['failed']} failed")
    if s["resumed"]:
        line += f"; {s['resumed']} resumed from an earlier run"
    if s["sidecar_failures"]:
        line += f"; {s['sidecar_failures']} sidecar(s) not written (see `pixdex failures`)"
    return line


def cmd_search(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.library import open_search

    return print_results(open_search(config).search(args.query, args.k), args)


def cmd_similar(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.library import open_search

    return print_results(open_search(config).similar(args.images, args.k, args.filter), args)


def print_results(results: Any, args: argparse.Namespace) -> int:
    for note in results.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(results.as_dict(), indent=2, ensure_ascii=False))
    elif args.null:
        sys.stdout.flush()
        sys.stdout.buffer.write(b"".join(h.raw_path + b"\0" for h in results.hits))  # the exact bytes
        sys.stdout.buffer.flush()
    else:
        for n, hit in enumerate(results.hits, 1):
            parts = []
            if hit.vector_rank is not None:
                parts.append(f"vector #{hit.vector_rank} {hit.vector_score:.3f}")
            if hit.text_rank is not None:
                parts.append(f"text #{hit.text_rank} {hit.text_score:.2f}")
            print(f"{n:3d}  {hit.score:.5f}  {printable(hit.path)}" + (f"   [{', '.join(parts)}]" if parts else ""))
    if not results.hits:
        print("no results", file=sys.stderr)
    return EXIT_OK if results.hits else EXIT_SOME_FAILED


def printable(text: str) -> str:
    """A path for a terminal line: control characters (a newline in a name) escaped, one line per hit."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.library import status

    info = status(config)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    counts = info["counts"]
    print(f"images: {counts['done']} indexed, {counts['pending']} pending, {counts['failed']} failed")
    print("queue: " + ", ".join(f"{n} {name}" for name, n in info["queue"].items()))
    for kind, model in info["models"].items():
        print(f"{kind} model: {model['name'] or '(disabled)'}: {model['state']}")
    for name, size in info["sizes"].items():
        print(f"{name}: {size:,} bytes")
    for name, path in info["paths"].items():
        print(f"{name}: {path}")
    return EXIT_OK


def cmd_failures(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.library import failures

    rows = failures(config)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for row in rows:
            print(f"{printable(row['path'])}: {row['kind']}: {row['reason']}")
        if not rows:
            print("no failures", file=sys.stderr)
    return EXIT_OK


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    section = ""
    for key, default, help_text in describe_settings():
        name, _, setting = key.partition(".")
        if name != section:
            print(f"\n[{name}]")
            section = name
        print(f"# {help_text}\n{setting} = {json.dumps(default)}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    model_dir = getattr(args, "dir", None) or config.model_dir
    if args.models_command == "list":
        for kind in ("clip", "tagger"):
            found = sorted(p.name for p in (model_dir / kind).iterdir() if p.is_dir() and not p.name.startswith(".")) \
                if (model_dir / kind).is_dir() else []
            print(f"{kind}: {', '.join(found) or '(none)'}")
        return EXIT_OK
    try:
        return _export_models(args, model_dir)
    except ImportError as exc:  # torch and open_clip come with the export extra only
        print(f"pixdex: error: model export needs the export extra (pip install 'pixdex[export]'): {exc}",
              file=sys.stderr)
        return EXIT_USAGE


def _export_models(args: argparse.Namespace, model_dir: Path) -> int:
    from pixdex.indexer import export

    if args.models_command == "export":
        path = export.export_pretrained_clip(args.name, args.pretrained, model_dir)
        print(f"exported {path}; set [models] clip = \"{path.name}\" in {default_config_path(os.environ)}")
        return EXIT_OK
    clip = export.write_standin_clip(model_dir)
    tagger = export.write_standin_tagger(model_dir)
    print(f"wrote {clip}\nwrote {tagger}")
    print("WARNING: these are STAND-IN models with random weights. They exercise every code path, but their "
          "tags and rankings are meaningless. To use them, put this in your config:\n"
          f"[models]\nclip = \"{clip.name}\"\ntagger = \"{tagger.name}\"", file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.library import open_search
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
        return print_results(service.search(args.query, args.k), plain)
    if not sys.stdin.isatty():
        return EXIT_OK
    print("type a query (filters: tag: folder: ext: after: before: camera:), empty line to quit", file=sys.stderr)
    while (line := input("pixdex> ").strip()):
        try:
            print_results(service.search(line, args.k), plain)
        except QueryError as exc:
            print(f"pixdex: {exc}", file=sys.stderr)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "run": cmd_run, "index": cmd_index, "search": cmd_search, "similar": cmd_similar, "status": cmd_status,
    "failures": cmd_failures, "config": cmd_config, "models": cmd_models,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
