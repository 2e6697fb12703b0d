"""The `pixdex` command: serve, search, similar, status, failures, pause, resume, reindex, watch,
token, service, index, models, config, run.

When a daemon answers on the socket, the commands ask it (the client stays light: no numpy, no
index opened); when none runs, they work on the data directory directly, with the same output.
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
import time
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
    rebuild = sub.add_parser("rebuild", help="rebuild the catalog and both indexes from the images and their sidecars "
                                            "(no model runs for an image whose sidecar carries its embedding)")
    rebuild.add_argument("--json", action="store_true", help="print the summary as JSON")
    check = sub.add_parser("check", help="compare the catalog, both indexes, the sidecars and the files on disk")
    check.add_argument("--fix", action="store_true", help="repair what disagrees (stop the daemon first)")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")

    sub.add_parser("serve", help="run the daemon: watch the folders, keep the indexes true, answer queries")
    sub.add_parser("reload", help="make the running daemon re-read its config (as SIGHUP does)")
    sub.add_parser("pause", help="pause indexing (kept across restarts); queries go on")
    sub.add_parser("resume", help="resume indexing")
    reindex = sub.add_parser("reindex", help="index these files or folders again, ahead of everything else")
    reindex.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="default: every watched folder")
    reindex.add_argument("--notify", action="store_true", help="also say it in a desktop notification (file managers)")
    page = sub.add_parser("open", help="open the web page in a browser (a one-time login link)")
    page.add_argument("words", nargs="*", metavar="QUERY|IMAGE", help="a query; with --similar, image files")
    page.add_argument("--similar", action="store_true", help="show images like the given ones")
    page.add_argument("--narrow", action="store_true", help=argparse.SUPPRESS)  # "Search images like these"
    page.add_argument("--print-url", action="store_true", help="print the link instead of opening it")
    page.add_argument("--lan", action="store_true", help="a link (and QR code) for a phone on the network (server.lan)")
    page.add_argument("--only", default=None, metavar="NAME[,NAME]", help="with --lan: show only these collections")
    page.add_argument("--notify", action="store_true", help="also show problems as a desktop notification")
    sub.add_parser("dbus", help="serve the GNOME Shell and KRunner search providers on the session bus")
    integrate = sub.add_parser("integrate", help="install or remove the desktop search providers and "
                                                 "file-manager actions for this user")
    isub = integrate.add_subparsers(dest="integrate_command", required=True, metavar="ACTION")
    isub.add_parser("install", help="GNOME/KDE search, Nautilus/Dolphin/Thunar actions, the desktop entry")
    isub.add_parser("remove", help="remove what install wrote (and only that)")
    isub.add_parser("status", help="what is installed, and what is out of date")
    watch = sub.add_parser("watch", help="add, remove or list watched folders (collections)")
    wsub = watch.add_subparsers(dest="watch_command", required=True, metavar="ACTION")
    wadd = wsub.add_parser("add", help="watch a folder; --name names the collection (in:NAME in queries)")
    wadd.add_argument("dir", type=Path, metavar="DIR")
    wadd.add_argument("--name", help="collection name (default: the folder's name)")
    wremove = wsub.add_parser("remove", help="stop watching a folder added with `watch add` (by name or path)")
    wremove.add_argument("dir", metavar="DIR|NAME")
    wlist = wsub.add_parser("list", help="watched folders, their names and how they are watched")
    wlist.add_argument("--json", action="store_true")
    token = sub.add_parser("token", help="the bearer token for the loopback TCP listener")
    token.add_argument("--new", action="store_true", help="make another token")
    token.add_argument("--only", default=None, metavar="NAME[,NAME]",
                       help="with --new: limit it to these collections")
    token.add_argument("--label", default="", help="with --new: a note saying who holds it")
    token.add_argument("--list", action="store_true", help="every token: its id, what it sees, its label")
    token.add_argument("--json", action="store_true", help="with --list: print JSON")
    token.add_argument("--revoke", metavar="ID|LABEL",
                       help="end a token (and the web page sessions logged in with it) at once")
    service = sub.add_parser("service", help="install or remove the systemd user units")
    ssub = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    ssub.add_parser("install", help="write pixdex.service and pixdex.socket to ~/.config/systemd/user/")
    ssub.add_parser("uninstall", help="remove them")
    ssub.add_parser("status", help="whether they are installed and running")

    models = sub.add_parser("models", help="list, pull, remove, export models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    mlist = msub.add_parser("list", help="the models pixdex knows and those installed: size, licence, in use")
    mlist.add_argument("--json", action="store_true", help="print JSON")
    pull = msub.add_parser("pull", help="download a known model from the Hugging Face hub (HF_ENDPOINT, HF_HUB_OFFLINE honoured)")
    pull.add_argument("name", help="a name from `pixdex models list`")
    pull.add_argument("--revision", help="a branch, tag or commit of the hub repo (default: the one pixdex knows)")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    pull.add_argument("--dir", type=Path, help="model directory (default: the configured one)")
    info = msub.add_parser("info", help="what a model is, where it came from, its files")
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print JSON")
    remove = msub.add_parser("remove", help="delete an installed model (not one the config uses, unless --force)")
    remove.add_argument("name")
    remove.add_argument("--force", action="store_true", help="remove it even when the config names it")
    standin = msub.add_parser("standin", help="write small stand-in models (meaningless results; for trying and testing)")
    standin.add_argument("--dir", type=Path, help="model directory (default: the configured one)")
    standin.add_argument("--multilingual", action="store_true",
                         help="also a stand-in of the multilingual CLIP (XLM-RoBERTa text tower; needs transformers)")
    export = msub.add_parser("export", help="export an open_clip model to ONNX (needs the export extra and its weights)")
    export.add_argument("name", help="open_clip model name, e.g. ViT-B-32")
    export.add_argument("weights", nargs="?", metavar="PRETRAINED", help="open_clip pretrained tag, e.g. openai")
    export.add_argument("--pretrained", help="the same, as an option")
    export.add_argument("--dir", type=Path, help="model directory (default: the configured one)")
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
        config = _load_config(args)
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


# Commands that only read, or ask the daemon: a setting the file gets wrong is left at its default, with a
# warning, so they keep working beside a daemon that refused the file and kept its last good config.
LENIENT = {"search", "similar", "status", "failures", "pause", "resume", "open", "token", "dbus"}


def _load_config(args: argparse.Namespace) -> Config:
    if args.command not in LENIENT and not (args.command == "watch" and args.watch_command == "list"):
        return load_config(args.config)
    from pixdex.indexer.settings import load_config_leniently

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


# Commands ------------------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace, config: Config) -> int:
    roots = [Path(os.path.abspath(d)) for d in args.dirs] or config.folders
    _check_roots(roots)
    client = daemon_client(config)
    if client is not None:
        from pixdex.indexer.errors import PixdexError

        pid = client.get("/health")["pid"]
        raise PixdexError(f"the pixdex daemon (pid {pid}) keeps the watched folders indexed; `pixdex watch add DIR` "
                          "adds a folder, `pixdex reindex [PATH]` redoes files, `pixdex status` shows progress")
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


def index_folders(config: Config, roots: list[Path], progress: bool, rebuild: Any = None) -> dict[str, Any]:
    """Scan → queue → drain, as a thin client of the indexing core. `rebuild` (the old catalog's
    `rebuild.Previous`): build without models if need be, keeping the old ids."""
    from tqdm import tqdm

    from pixdex.indexer.core import Indexer

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends a run as Ctrl-C does: finished work is committed

    with Indexer(config, reduced_ok=rebuild is not None, ids=rebuild.ids if rebuild else None) as indexer:
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
            if rebuild is not None:
                raise
            done = indexer.stats.committed - start
            print(f"pixdex: interrupted: {done} image(s) were committed; the rest stays queued and is "
                  "indexed at the next `pixdex index`", file=sys.stderr)
            raise SystemExit(130) from None
        summary = summary_dict(report, indexer.stats)
        summary["models"] = "" if indexer.info.has_models else indexer.info.missing
        return summary


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
        "sidecars_read": stats.sidecars_read, "from_sidecars": stats.from_sidecars,
        "resumed": report.resumed, "sidecar_failures": stats.sidecar_failures + len(report.sidecar_errors),
        "failures": stats.failures, "folder_errors": report.folder_errors,
        "sidecar_errors": report.sidecar_errors + stats.sidecar_errors,
    }


def summary_line(s: dict[str, Any]) -> str:
    line = (f"{s['new']} new, {s['changed']} changed, {s['unchanged']} unchanged, {s['moved']} moved, "
            f"{s['removed']} removed, {s['failed']} failed")
    if s["sidecars_read"]:
        line += f"; {s['sidecars_read']} edited sidecar(s) read again"
    if s["resumed"]:
        line += f"; {s['resumed']} resumed from an earlier run"
    if s["sidecar_failures"]:
        line += f"; {s['sidecar_failures']} sidecar(s) not written (see `pixdex failures`)"
    return line


def daemon_client(config: Config) -> Any:
    from pixdex.daemon.client import Client

    return Client.connect(config.socket_path, config.data_dir)


def cmd_search(args: argparse.Namespace, config: Config) -> int:
    from pixdex.indexer.paths import as_text

    args.query = as_text(args.query)  # `pixdex search $'caf\xe9'`: the words as the index holds such names
    client = daemon_client(config)
    if client is not None:
        if len(args.query) > config.server.max_query_chars:
            from pixdex.query.parse import QueryError

            raise QueryError(f"the query is {len(args.query)} characters long; at most "
                             f"{config.server.max_query_chars} are allowed (server.max_query_chars)")
        data = client.get("/search", q=args.query, k=args.k, cwd=os.getcwd(), raw="1" if args.null else None)
        return print_results(data, args)
    from pixdex.daemon.library import open_search

    return print_results(results_dict(open_search(config).search(args.query, args.k), args.null), args)


def cmd_similar(args: argparse.Namespace, config: Config) -> int:
    from pixdex.indexer.paths import as_text

    args.filter = as_text(args.filter) if args.filter is not None else None
    client = daemon_client(config)
    if client is not None:
        return print_results(_similar_via(client, args, int(config.server.max_upload_mb * 2**20)), args)
    from pixdex.daemon.library import open_search

    results = open_search(config).similar(args.images, args.k, args.filter)
    return print_results(results_dict(results, args.null), args)


def _similar_via(client: Any, args: argparse.Namespace, max_bytes: int) -> dict[str, Any]:
    """One indexed image: the daemon looks it up; otherwise the images are uploaded as a query (regular files
    of at most `max_bytes` each, as the daemon takes them)."""
    from pixdex.daemon.client import DaemonError, read_upload

    if len(args.images) == 1:
        import base64

        path = os.fsencode(os.path.abspath(args.images[0]))
        where = {"path": path.decode()} if _is_utf8(path) else {"path_b64": base64.b64encode(path).decode()}
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


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def results_dict(results: Any, raw: bool) -> dict[str, Any]:
    import base64

    data: dict[str, Any] = results.as_dict()
    if raw:
        for hit, out in zip(results.hits, data["hits"], strict=True):
            out["path_b64"] = base64.b64encode(hit.raw_path).decode()
    return data


def print_results(data: dict[str, Any], args: argparse.Namespace) -> int:
    hits = data["hits"]
    for note in data["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in data.items()} | {"hits": [
            {k: v for k, v in h.items() if k != "path_b64"} for h in hits]}, indent=2, ensure_ascii=False))
    elif args.null:
        import base64

        sys.stdout.flush()
        sys.stdout.buffer.write(b"".join(base64.b64decode(h["path_b64"]) + b"\0" for h in hits))  # the exact bytes
        sys.stdout.buffer.flush()
    else:
        for n, hit in enumerate(hits, 1):
            parts = []
            if hit["vector_rank"] is not None:
                parts.append(f"vector #{hit['vector_rank']} {hit['vector_score']:.3f}")
            if hit["text_rank"] is not None:
                parts.append(f"text #{hit['text_rank']} {hit['text_score']:.2f}")
            print(f"{n:3d}  {hit['score']:.5f}  {printable(hit['path'])}" + (f"   [{', '.join(parts)}]" if parts else ""))
    if not hits:
        print("no results", file=sys.stderr)
    return EXIT_OK if hits else EXIT_SOME_FAILED


def printable(text: str) -> str:
    """A path for a terminal line: control characters (a newline in a name) escaped, one line per hit."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    client = daemon_client(config)
    if client is not None:
        info = client.get("/status")
    else:
        from pixdex.daemon.library import status

        info = status(config)
        other = _other_daemon(config)
        if other:
            info["other_daemon"] = other
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return EXIT_OK
    counts = info["counts"]
    sidecars = info.get("sidecar_failures", 0)
    print(f"images: {counts['done']} indexed, {counts['pending']} pending, {counts['failed']} failed"
          + (f"; {sidecars} sidecar(s) not written (read and indexed anyway; see `pixdex failures`)" if sidecars else ""))
    print("queue: " + ", ".join(f"{n} {name}" for name, n in info["queue"].items()))
    for folder in info.get("unreadable_folders", []):
        print(f"unreadable folder: {printable(folder['path'])}: {folder['reason']} (what is below it is kept as it "
              "was; scanned again once it can be read)")
    for kind, model in info["models"].items():
        state = str(model["state"])
        print(f"{kind} model: {model['name']}: {state}" if model["name"] else
              f"{kind} model: {state if state != 'disabled' else 'off'} (models.{kind} in the config)")
        switch = model.get("reembedding")
        if switch:
            print(f"  re-embedding the library: searches use {switch['from']} until the last {switch['left']} "
                  f"image(s) have their {switch['to']} vector")
    _print_live(info)
    for name, size in info["sizes"].items():
        print(f"{name}: {size:,} bytes")
    for name, path in info["paths"].items():
        print(f"{name}: {path}")
    return EXIT_OK


def _other_daemon(config: Config) -> dict[str, Any] | None:
    """The daemon on this config's socket when it serves another data directory."""
    from pixdex.daemon.client import Client

    client = Client.connect(config.socket_path)
    try:
        return dict(client.get("/health", brief="1")) if client is not None else None
    except Exception:  # noqa: BLE001 - it only adds a note
        return None


def _print_live(info: dict[str, Any]) -> None:
    daemon = info.get("daemon")
    if daemon is None:
        other = info.get("other_daemon")
        if other:
            print(f"daemon: none for this data directory (the one on the socket, pid {other['pid']}, serves "
                  f"{other.get('data_dir')})")
        else:
            print("daemon: not running (`pixdex serve`, or `pixdex service install`)")
        return
    state = "paused" if daemon["paused"] else "running"
    print(f"daemon: {state}, pid {daemon['pid']}, up {daemon['uptime']:.0f} s, {daemon['mode']} mode; "
          f"socket {daemon['socket']}, tcp {daemon['tcp']}")
    _print_connections(info.get("connections") or {})
    if daemon["mode"] == "restarting":
        print(f"  the indexing process is starting again ({daemon['missing']}); searches go on")
    if daemon["mode"] == "reduced":
        print(f"  missing models: {daemon['missing']}")
        pull = daemon.get("models_pull") or {}
        if pull.get("state") == "pulling":
            print(f"  pulling {', '.join(pull['models'])} from the Hugging Face hub in the background"
                  + _pull_progress(pull.get("progress")))
        elif pull.get("state") == "failed":
            print(f"  the background pull failed (tried again every 10 min): {pull['error']}")
        print(f"  fix: {daemon['fix']}")
        print(f"  {info['waiting_for_models']} image(s) indexed by name and metadata only, waiting for models")
    describe = info.get("describe") or {}
    if describe.get("enabled"):
        why = f": {describe['why']}" if describe.get("why") else ""
        print(f"descriptions ({describe['model']} at {describe['host']}): {describe['state']}{why}; "
              f"{describe.get('described', 0)} described, {describe.get('pending', 0)} pending, "
              f"{describe.get('failed', 0)} failed")
    progress = info["progress"]
    eta = f", about {progress['eta_seconds']} s left" if progress["eta_seconds"] is not None else ""
    print(f"progress: {progress['rate']} files/s{eta}; {progress['committed']} committed, "
          f"{progress['failed']} failed since start")
    for stage, path in progress["current"].items():
        print(f"  {stage}: {printable(path)}")
    if progress["scanning"]:
        print(f"  scanning: {progress['scanning']}")
    models = info["loaded_models"]
    loaded = ", ".join(models["indexing"] + models["query"]) or "none (unloaded when idle)"
    memory = ", ".join(f"{name} {rss / 2**20:.0f} MiB" for name, rss in models["rss"].items())
    providers = ", ".join(models.get("providers") or []) or "not loaded yet"
    print(f"loaded models: {loaded}; memory: {memory}; running on: {providers}")
    for root in info["watch"]:
        print(f"watch: {printable(root['path'])}: {root['mode']} ({root['why']})")


def _print_connections(listeners: dict[str, dict[str, Any]]) -> None:
    """Open connections per listener against its cap, and what the caps did (closed idle ones, refused)."""
    if not listeners:
        return
    parts = [f"{name} {c['open']} of {c['limit']}" + (f" ({c['busy']} busy)" if c["busy"] else "")
             for name, c in listeners.items()]
    closed, refused = (sum(c[key] for c in listeners.values()) for key in ("closed_idle", "refused"))
    extra = f"; since start {closed:,} idle closed to make room, {refused:,} refused" if closed or refused else ""
    print(f"connections: {', '.join(parts)}{extra}")


def _pull_progress(progress: dict[str, Any] | None) -> str:
    if not progress or not progress.get("total"):
        return ""
    done, total = progress["done"], progress["total"]
    if progress.get("unit") == "B":
        return f": {progress['model']} {done / 2**20:,.1f} of {total / 2**20:,.1f} MB ({100 * done // total}%)"
    return f": {progress['model']} {done} of {total} files"


def cmd_failures(args: argparse.Namespace, config: Config) -> int:
    client = daemon_client(config)
    if client is not None:
        rows = client.get("/failures")
    else:
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


def _no_daemon(config: Config, what: str) -> None:
    client = daemon_client(config)
    if client is not None:
        from pixdex.indexer.errors import PixdexError

        pid = client.get("/health")["pid"]
        raise PixdexError(f"the pixdex daemon (pid {pid}) is running; stop it first (`systemctl --user stop pixdex`, "
                          f"or Ctrl-C on `pixdex serve`), then run `pixdex {what}`")


def cmd_rebuild(args: argparse.Namespace, config: Config) -> int:
    """The catalog and both indexes, again, from the images and their sidecars — built aside, swapped in once
    complete (indexer/rebuild.py); the old ones are moved aside (named in the output), never deleted. Ids and
    folders added with `watch add` are kept. Without model files, keywords and embeddings come from the
    sidecars alone."""
    import dataclasses
    import shutil
    import time

    from pixdex.indexer import rebuild
    from pixdex.indexer.catalog import Catalog
    from pixdex.indexer.core import lock_data_dir
    from pixdex.indexer.layout import Layout

    _no_daemon(config, "rebuild")
    layout = config.layout
    lock = lock_data_dir(layout.root, layout.lock)  # held throughout: no daemon or index run starts meanwhile
    try:
        rebuild.finish_swap(layout)
        old = rebuild.previous(layout)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        built = Layout(layout.root / f"rebuild-{stamp}.partial")
        shutil.rmtree(built.root, ignore_errors=True)
        for stale in layout.root.glob("rebuild-*.partial"):  # left by a rebuild that was cut short
            shutil.rmtree(stale, ignore_errors=True)
        building = dataclasses.replace(config, paths=dataclasses.replace(
            config.paths, data_dir=str(built.root), model_dir=str(config.model_dir)))
        if old.collections:
            catalog = Catalog(built.catalog)
            try:
                with catalog.transaction():
                    for name, path in old.collections:
                        catalog.add_collection(name, path)
            finally:
                catalog.close()
        roots = list(config.folders) + [Path(os.fsdecode(p)) for _, p in old.collections]
        try:
            summary = index_folders(building, roots, progress=not args.json, rebuild=old)
        except BaseException:
            shutil.rmtree(built.root, ignore_errors=True)
            print(f"pixdex: rebuild stopped; the catalog and indexes in {layout.root} are as they were",
                  file=sys.stderr)
            raise
        aside = layout.root / f"before-rebuild-{stamp}" if layout.exists() else None
        rebuild.swap_in(layout, built, aside or layout.root / f"before-rebuild-{stamp}")
    finally:
        lock.close()
    summary["moved_aside"] = str(aside) if aside else None
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(summary_line(summary) + f"; {summary['from_sidecars']} embedding(s) and keyword set(s) taken from "
          f"sidecars, {summary['inference_calls']} model call(s)")
    if summary["models"]:
        print(f"no models: names, keywords, filters and `similar` of indexed images work; searching by text "
              f"for what is in the images waits for the CLIP model ({summary['models']})")
    if aside:
        print(f"the previous catalog and indexes are in {aside} (delete it once you are satisfied)")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.library import watched
    from pixdex.indexer.check import check, repair

    folders = [c.path for c in watched(config)]
    findings = check(config, folders)
    if findings and args.fix:
        _no_daemon(config, "check --fix")
        repair(config, findings, folders)
        fixed = len(findings)
        findings = check(config, folders)
        print(f"repaired {fixed - len(findings)} of {fixed} disagreement(s)", file=sys.stderr)
    if args.json:
        print(json.dumps([f.as_dict() for f in findings], indent=2, ensure_ascii=False))
    else:
        for finding in findings:
            print(f"{printable(finding.path)}: {finding.kind}: {finding.problem}")
        if not findings:
            print("catalog, text index, vector index, sidecars and files agree", file=sys.stderr)
        elif not args.fix:
            print(f"{len(findings)} disagreement(s); `pixdex check --fix` repairs them", file=sys.stderr)
    return EXIT_SOME_FAILED if findings else EXIT_OK


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.logs import setup_logging
    from pixdex.daemon.server import serve

    setup_logging(args.verbose)
    return serve(config, args.config)


def cmd_reload(args: argparse.Namespace, config: Config) -> int:
    from pixdex.indexer.errors import PixdexError

    client = daemon_client(config)
    if client is None:
        raise PixdexError(f"no daemon answers on {config.socket_path}; the config is read when `pixdex serve` starts")
    pid = int(client.get("/health")["pid"])
    os.kill(pid, signal.SIGHUP)
    print(f"asked the daemon (pid {pid}) to re-read its config; its log says whether it was taken or refused")
    return EXIT_OK


def cmd_pause(args: argparse.Namespace, config: Config) -> int:
    return _set_paused(config, True)


def cmd_resume(args: argparse.Namespace, config: Config) -> int:
    return _set_paused(config, False)


def _set_paused(config: Config, paused: bool) -> int:
    client = daemon_client(config)
    if client is not None:
        client.post("/pause" if paused else "/resume")
    else:
        from pixdex.daemon.library import offline_write

        offline_write(config, lambda catalog: catalog.set_meta("paused", int(paused)))
    where = "" if client is not None else " (no daemon runs; it starts paused)" if paused else ""
    print(("indexing paused" if paused else "indexing resumed") + where)
    return EXIT_OK


def cmd_reindex(args: argparse.Namespace, config: Config) -> int:
    if args.notify:
        return _notifying(lambda: _reindex(args, config))
    return _reindex(args, config)


def _notifying(run: Callable[[], int]) -> int:
    """Run a command a file manager started: its outcome, or its error, as a desktop notification."""
    from pixdex.daemon.openpage import notify
    from pixdex.indexer.errors import PixdexError

    try:
        return run()
    except PixdexError as exc:
        notify(str(exc))
        return EXIT_USAGE


def _reindex(args: argparse.Namespace, config: Config) -> int:
    paths = [os.path.abspath(p) for p in args.paths]
    for path in paths:
        if not os.path.exists(path):
            from pixdex.indexer.errors import PixdexError

            raise PixdexError(f"{path}: no such file or folder")
    client = daemon_client(config)
    if client is not None:
        count = client.post("/reindex", {"paths": paths})["queued"]
        print(f"{count} image(s) queued ahead of everything else")
        if args.notify:
            from pixdex.daemon.openpage import notify

            notify(f"{count} image(s) queued to be described and tagged again, ahead of everything else")
    else:
        from pixdex.daemon.library import offline_reindex

        count = offline_reindex(config, [Path(p) for p in paths])
        print(f"{count} image(s) queued; no daemon runs: `pixdex serve` or `pixdex index` will index them")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, config: Config) -> int:
    client = daemon_client(config)
    from pixdex.daemon import library

    if args.watch_command == "list":
        rows = client.get("/watches") if client is not None else library.offline_watches(config)
        if args.json:
            print(json.dumps(rows, indent=2, ensure_ascii=False))
        for row in [] if args.json else rows:
            print(f"{row['name']}: {printable(row['path'])} ({row['source']}; {row['watch']}"
                  + (f": {row['why']}" if row.get("why") else "") + ")")
        return EXIT_OK
    if args.watch_command == "add":
        path = os.path.abspath(args.dir)
        added = client.request("POST", "/watches", body={"path": path, "name": args.name}) if client is not None \
            else library.offline_watch_add(config, Path(path), args.name)
        print(f"watching {printable(added['path'])} as {added['name']} (query with in:{added['name']})")
        return EXIT_OK
    key = args.dir if "/" not in args.dir else os.path.abspath(args.dir)
    if client is not None:
        import urllib.parse

        removed = client.request("DELETE", "/watches/" + urllib.parse.quote(key, safe=""))
    else:
        removed = library.offline_watch_remove(config, key)
    print(f"stopped watching {printable(removed['path'])} ({removed['name']}); its images left the index, "
          "the files and sidecars stay")
    return EXIT_OK


def cmd_token(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.tokens import Tokens
    from pixdex.indexer.errors import PixdexError
    from pixdex.indexer.paths import as_text

    tokens = Tokens(config.state_dir / "tokens.json")
    chosen = [name for name, on in (("--new", args.new), ("--list", args.list), ("--revoke", args.revoke)) if on]
    if len(chosen) > 1:
        raise PixdexError(f"{' and '.join(chosen)} do not go together; give one")
    if (args.only or args.label) and not args.new:
        raise PixdexError("--only and --label need --new: `pixdex token --new --only NAME --label phone`")
    if args.json and not args.list:
        raise PixdexError("--json needs --list")
    if args.new:
        if len(args.label) > 100 or not args.label.isprintable() or as_text(args.label) != args.label:
            raise PixdexError("--label must be printable text of at most 100 characters (no control characters)")
        only = _collection_names(config, args.only) if args.only is not None else None
        token = tokens.add(only, args.label)
        print(token.secret)
        print(f"id {token.id}" + (f", limited to: {', '.join(only)}" if only else ", sees everything")
              + f"; `pixdex token --revoke {token.id}` ends it", file=sys.stderr)
        return EXIT_OK
    if args.list:
        listed = [t.listing() for t in tokens.load()]
        if args.json:
            print(json.dumps(listed, indent=2, ensure_ascii=False))
        else:
            for row in listed:
                scope = ", ".join(row["collections"]) if row["collections"] is not None else "everything"
                print(f"{row['id']}  {printable(scope):<24} {printable(str(row['label']))}")
        return EXIT_OK
    if args.revoke is not None:
        gone = tokens.revoke(args.revoke)
        print(f"revoked {gone.id}" + (f" ({gone.label})" if gone.label else "")
              + ": it and the web page sessions logged in with it stop working now")
        return EXIT_OK
    found = [t for t in tokens.load(create=True) if t.collections is None]
    if not found:  # every full-access token was revoked: `pixdex token` makes the next
        found = [tokens.add(None, f"full access (made {time.strftime('%Y-%m-%d %H:%M')})")]
    print(found[0].secret)
    print(f"token {found[0].id} ({found[0].label or 'full access'}): use it as `Authorization: Bearer <token>` on "
          f"http://127.0.0.1:{config.server.port}/ ({tokens.path}, {len(tokens.load())} token(s); "
          "`pixdex token --list` shows them)", file=sys.stderr)
    return EXIT_OK


def _collection_names(config: Config, given: str) -> tuple[str, ...]:
    """The collections `--only` names, spelled as they are; an unknown name is refused, naming those there are."""
    from pixdex.daemon import library
    from pixdex.indexer.errors import PixdexError

    client = daemon_client(config)
    rows = client.get("/watches") if client is not None else library.offline_watches(config)
    known = {str(r["name"]).lower(): str(r["name"]) for r in rows}
    wanted = [n.strip() for n in given.split(",") if n.strip()]
    if not wanted:
        raise PixdexError("--only needs collection names: `pixdex token --new --only NAME[,NAME]`")
    unknown = [n for n in wanted if n.lower() not in known]
    if unknown:
        raise PixdexError(f"--only: no collection is named {', '.join(map(repr, unknown))}; there are: "
                          f"{', '.join(sorted(known.values())) or 'none'} (`pixdex watch list`)")
    return tuple(dict.fromkeys(known[n.lower()] for n in wanted))


def cmd_service(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon import units

    directory = units.unit_dir(config.environ)
    if args.service_command == "install":
        written = units.install(directory, units.default_exec_start(), args.config)
        for path in written:
            print(f"wrote {path}")
        action = "install"
    elif args.service_command == "uninstall":
        commands = units.next_commands("uninstall", unit_dir=directory)
        print("if they run, stop and disable them first:\n  " + " ".join(commands[0]))
        for path in units.uninstall(directory):
            print(f"removed {path}")
        print("then run:\n  " + "\n  ".join(" ".join(c) for c in commands[1:]))
        return EXIT_OK
    else:
        for name in ("pixdex.service", "pixdex.socket"):
            path = directory / name
            print(f"{name}: {'installed at ' + str(path) if path.exists() else 'not installed'}")
        client = daemon_client(config)
        print("daemon: " + ("answering on " + str(config.socket_path) if client else "not running"))
        return EXIT_OK
    print("then run:")
    for command in units.next_commands(action, unit_dir=directory):  # type: ignore[arg-type]
        print("  " + " ".join(command))
    return EXIT_OK


def cmd_open(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon.openpage import open_page

    def run() -> int:
        from pixdex.indexer.paths import as_text

        args.words = [as_text(w) for w in args.words]
        only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
        url = open_page(config, args.words, args.similar, args.narrow, args.lan, only, args.print_url)
        if args.lan:
            from pixdex.daemon.webpage import qr_terminal

            print(qr_terminal(url))
            print(f"scan it with the phone (it works once, within 10 minutes): {url}")
        elif args.print_url:
            print(url)
        else:
            print(f"opened the web page (the login link works once): {url}", file=sys.stderr)
        return EXIT_OK

    return _notifying(run) if args.notify else run()


def cmd_dbus(args: argparse.Namespace, config: Config) -> int:
    try:
        from pixdex.daemon import dbus
    except ImportError as exc:
        from pixdex.indexer.errors import PixdexError

        raise PixdexError(f"the search providers need the desktop extra (.venv/bin/pip install '.[desktop]' in the "
                          f"pixdex checkout): {exc}") from None
    return dbus.run(config)


def cmd_integrate(args: argparse.Namespace, config: Config) -> int:
    from pixdex.daemon import integrate, units

    program = str(units.default_exec_start()[0])
    if args.integrate_command == "install":
        for path in integrate.install(program, config.environ):
            print(f"wrote {path}")
        ini = integrate.data_home(config.environ) / "pixdex" / "integration" / f"{integrate.BUS_NAME}.search-provider.ini"
        print("GNOME Shell reads search providers only from the system folders; to add pixdex to its search, run\n"
              f"  sudo install -D -m 644 {ini} {integrate.GNOME_INI_DIR}/{ini.name}\n"
              "and log out and in again. KRunner, Dolphin, Nautilus and Thunar pick their files up by themselves "
              "(KRunner after `kquitapp6 krunner`, Nautilus and Thunar after a restart of the file manager).")
        try:
            import dbus_fast  # noqa: F401
        except ImportError:
            print("note: the search providers need the desktop extra: .venv/bin/pip install '.[desktop]'")
    elif args.integrate_command == "remove":
        for path in integrate.remove(config.environ):
            print(f"removed {path}" if not path.name.endswith(".xml") else f"removed pixdex's actions from {path}")
        system = Path(integrate.GNOME_INI_DIR) / f"{integrate.BUS_NAME}.search-provider.ini"
        if system.exists():
            print(f"the system copy for GNOME Shell needs root: sudo rm {system}")
    else:
        for what, path, state in integrate.status(program, config.environ):
            print(f"{what}: {state}: {path}")
        system = Path(integrate.GNOME_INI_DIR) / f"{integrate.BUS_NAME}.search-provider.ini"
        shown = system.exists() or Path("/usr/share/gnome-shell/search-providers", system.name).exists()
        print(f"GNOME Shell (system folder): {'installed' if shown else 'missing'}: {system}")
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
    handlers = {"list": _models_list, "pull": _models_pull, "info": _models_info, "remove": _models_remove}
    if args.models_command in handlers:
        return handlers[args.models_command](args, config, model_dir)  # ModelError: one line, exit 2
    try:
        return _export_models(args, model_dir, config.source or default_config_path(os.environ))
    except ImportError as exc:  # torch and open_clip come with the export extra only
        print(f"pixdex: error: model export needs the export extra (.venv/bin/pip install '.[export]' in the pixdex checkout; for a CPU-only torch install it first from https://download.pytorch.org/whl/cpu): {exc}",
              file=sys.stderr)
        return EXIT_USAGE


def _in_use(config: Config) -> dict[tuple[str, str], str]:
    used = {("clip", config.models.clip): "[models] clip"}
    if config.models.tagger:
        used[("tagger", config.models.tagger)] = "[models] tagger"
    live = _live_model(config)
    if live is not None:
        used.setdefault(("clip", live.rsplit("@", 1)[0]), "live vectors")  # searched until the new model's are done
    return used


def _live_model(config: Config) -> str | None:
    from pixdex.indexer.catalog import Catalog
    from pixdex.indexer.errors import CatalogError

    if not config.layout.exists():
        return None
    try:
        catalog = Catalog(config.layout.catalog, read_only=True)
    except CatalogError:
        return None
    try:
        return catalog.live_model()
    finally:
        catalog.close()


def _model_rows(config: Config, model_dir: Path) -> list[dict[str, Any]]:
    from pixdex.indexer import hub

    used = _in_use(config)
    rows = []
    local = set(hub.local_models(model_dir))
    for model in hub.KNOWN:
        key = (model.kind, model.name)
        directory = hub.folder(model_dir, model)
        state = hub.installed(model_dir, model.kind, model.name)
        rows.append({"name": model.name, "kind": model.kind, "installed": state,
                     "size_mb": round(hub.disk_size(directory) / 2**20) if state != "no" else model.download_mb,
                     "licence": model.licence, "in_use": used.get(key, ""), "source": model.repo,
                     "languages": model.languages})
        local.discard(key)
    for kind, name in sorted(local):  # exports, stand-ins, copies
        directory = model_dir / kind / name
        source = hub.manifest(directory).get("repo") or ("stand-in" if name.startswith("pixdex-standin") else "local")
        rows.append({"name": name, "kind": kind, "installed": hub.installed(model_dir, kind, name),
                     "size_mb": round(hub.disk_size(directory) / 2**20), "licence": "", "in_use": used.get((kind, name), ""),
                     "source": source, "languages": ""})
    for (kind, name), where in used.items():
        if not any(r["kind"] == kind and r["name"] == name for r in rows):
            rows.append({"name": name, "kind": kind, "installed": "no", "size_mb": None, "licence": "",
                         "in_use": where, "source": "unknown to pixdex", "languages": ""})
    return rows


def _models_list(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    rows = _model_rows(config, model_dir)
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return EXIT_OK
    print(f"model directory: {model_dir}")
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  KIND    INSTALLED  SIZE      IN USE          LICENCE")
    for r in rows:
        size = "?" if r["size_mb"] is None else f"{r['size_mb']:,} MB" + ("" if r["installed"] != "no" else " ↓")
        print(f"{r['name']:<{width}}  {r['kind']:<6}  {r['installed']:<9}  {size:<8}  {r['in_use'] or '-':<14}  "
              f"{r['licence'] or r['source']}")
    missing = [r for r in rows if r["in_use"] and r["installed"] != "yes"]
    for r in missing:
        print(f"\n{r['in_use']} = \"{r['name']}\" is not installed: `pixdex models pull {r['name']}`"
              if r["source"] != "unknown to pixdex" else
              f"\n{r['in_use']} = \"{r['name']}\" is neither installed nor known; put its files in "
              f"{model_dir / r['kind'] / r['name']}")
    print("\n(↓ = download size)")
    return EXIT_OK


def _models_info(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    from pixdex.indexer import hub
    from pixdex.indexer.errors import ModelError

    local = {name.lower(): (kind, name) for kind, name in hub.local_models(model_dir)}
    try:
        model = hub.known(args.name)
        kind, name, info = model.kind, model.name, hub.describe(model)
    except ModelError:
        if args.name.lower() not in local:
            raise
        kind, name = local[args.name.lower()]
        info = {"name": name, "kind": kind}
    directory = model_dir / kind / name
    info |= {"directory": str(directory), "installed": hub.installed(model_dir, kind, name),
             "size_bytes": hub.disk_size(directory), "in_use": _in_use(config).get((kind, name), ""),
             "pulled": hub.manifest(directory)}
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return EXIT_OK
    for key in ("name", "kind", "repo", "revision", "licence", "languages", "about", "download_mb", "directory",
                "installed", "size_bytes", "in_use"):
        if key in info:
            print(f"{key}: {info[key] if info[key] != '' else '-'}")
    pulled = info["pulled"]
    if pulled:
        print(f"pulled: {pulled.get('pulled')} from {pulled.get('endpoint')} at commit {pulled.get('commit')}")
        for f in pulled.get("files", []):
            print(f"  {f['path']}  {f['size']:,} bytes  sha256 {f['sha256']}")
    return EXIT_OK


def _models_pull(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    from pixdex.indexer import hub

    model = hub.known(args.name)
    print(f"pulling {model.name} ({model.kind}, {model.licence}, about {model.download_mb:,} MB) from {model.repo}",
          file=sys.stderr)
    path = hub.pull(model, model_dir, args.revision, progress=not args.quiet)
    print(f"installed {path}")
    key = "clip" if model.kind == "clip" else "tagger"
    if getattr(config.models, key) != model.name:
        print(f"to use it, set [models] {key} = \"{model.name}\" in {config.source or default_config_path(os.environ)}"
              " (a running daemon takes it with `pixdex reload`; a new CLIP model re-embeds in the background)",
              file=sys.stderr)
    return EXIT_OK


def _models_remove(args: argparse.Namespace, config: Config, model_dir: Path) -> int:
    from pixdex.indexer import hub
    from pixdex.indexer.errors import ModelError

    local = {name.lower(): (kind, name) for kind, name in hub.local_models(model_dir)}
    if args.name.lower() not in local:
        raise ModelError(f"{args.name}: not installed in {model_dir} (`pixdex models list`)")
    kind, name = local[args.name.lower()]
    where = _in_use(config).get((kind, name))
    if where and not args.force:
        if where == "live vectors":
            raise ModelError(f"{name}: searches still use its vectors while the library is re-embedded with "
                             f"{config.models.clip} (`pixdex status` shows how far); remove it after that, or "
                             "--force (likeness search then covers only the images re-embedded so far)")
        raise ModelError(f"{name}: the config uses it ({where}); set another model first, or --force (pixdex then "
                         "runs in reduced mode until a model is there)")
    freed = hub.remove(model_dir, kind, name)
    print(f"removed {model_dir / kind / name} ({freed / 2**20:,.0f} MB freed; the hub cache keeps its own copy: "
          "`hf cache ls` / `hf cache rm`)")
    return EXIT_OK


def _export_models(args: argparse.Namespace, model_dir: Path, config_file: Path) -> int:
    from pixdex.indexer import export

    if args.models_command == "export":
        pretrained = args.weights or args.pretrained
        if not pretrained:
            from pixdex.indexer.errors import PixdexError

            raise PixdexError("models export needs the pretrained tag: `pixdex models export ViT-B-32 openai` "
                              "(`python -c 'import open_clip; print(open_clip.list_pretrained())'` lists them)")
        path, parity = export.export_pretrained_clip(args.name, pretrained, model_dir)
        print(f"exported {path}; parity with open_clip: cosine ≥ {parity['image_cosine_min']:.6f} over "
              f"{parity['images']} images, ≥ {parity['text_cosine_min']:.6f} over {parity['texts']} texts")
        print(f"to use it, set [models] clip = \"{path.name}\" in {config_file}", file=sys.stderr)
        return EXIT_OK
    clip = export.write_standin_clip(model_dir)
    tagger = export.write_standin_tagger(model_dir)
    print(f"wrote {clip}\nwrote {tagger}")
    if args.multilingual:
        print(f"wrote {export.write_standin_multilingual_clip(model_dir)} (for [models] clip: queries in German, "
              "Korean… take the same path as with the real multilingual model)")
    print("WARNING: these are STAND-IN models with random weights. They exercise every code path, but their "
          "tags and rankings are meaningless. To use them, put this in your config:\n"
          f"[models]\nclip = \"{clip.name}\"\ntagger = \"{tagger.name}\"\n"
          f"(config file: {config_file}; a running daemon takes it with "
          "`pixdex reload`)",
          file=sys.stderr)
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


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "run": cmd_run, "index": cmd_index, "search": cmd_search, "similar": cmd_similar, "status": cmd_status,
    "failures": cmd_failures, "config": cmd_config, "models": cmd_models, "serve": cmd_serve, "reload": cmd_reload, "pause": cmd_pause,
    "open": cmd_open, "dbus": cmd_dbus, "integrate": cmd_integrate,
    "resume": cmd_resume, "reindex": cmd_reindex, "watch": cmd_watch, "token": cmd_token, "service": cmd_service,
    "rebuild": cmd_rebuild, "check": cmd_check,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
