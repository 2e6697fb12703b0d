"""`pixdex index`, `rebuild` and `check`: the indexing core run in this process (never beside a daemon, which
keeps the folders indexed itself)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pixdex.daemon.commands import distributed
from pixdex.daemon.commands.connect import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    daemon_client,
    no_daemon,
)
from pixdex.daemon.commands.output import printable, summary_dict, summary_line
from pixdex.indexer import rebuild
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config, default_config_path


def add_parsers(sub: Any) -> None:
    index = sub.add_parser("index", help="index folders (default: the configured ones)")
    index.add_argument("dirs", nargs="*", type=Path, metavar="DIR")
    index.add_argument("--json", action="store_true", help="print the summary as JSON")
    distributed.add_arguments(index)

    rebuild = sub.add_parser("rebuild", help="rebuild the catalog and both indexes from the images and their sidecars "
                                            "(no model runs for an image whose sidecar carries its embedding)")
    rebuild.add_argument("--json", action="store_true", help="print the summary as JSON")
    check = sub.add_parser("check", help="compare the catalog, both indexes, the sidecars and the files on disk")
    check.add_argument("--fix", action="store_true", help="repair what disagrees (stop the daemon first)")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    index.set_defaults(handler=cmd_index)
    rebuild.set_defaults(handler=cmd_rebuild)
    check.set_defaults(handler=cmd_check)


def cmd_index(args: argparse.Namespace, config: Config) -> int:
    ray = distributed.wants_ray(args)
    roots = [Path(os.path.abspath(d)) for d in args.dirs] or config.folders
    _check_roots(roots)
    if ray:
        return distributed.cmd_index_ray(args, config, roots, index_folders)
    client = daemon_client(config)
    if client is not None:
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
        if summary["models"]:
            print(f"note: no models, so names, folders, metadata and what sidecars hold were indexed; the images wait "
                  f"for the CLIP model: {summary['models']}", file=sys.stderr)
    return EXIT_OK


def index_folders(config: Config, roots: list[Path], progress: bool, rebuild: Any = None) -> dict[str, Any]:
    """Scan → queue → drain, as a thin client of the indexing core; without models in reduced mode, as the
    daemon runs (names, folders, metadata, and what sidecars hold). `rebuild` (the old catalog's
    `rebuild.Previous`): keep the old ids."""
    from tqdm import tqdm

    from pixdex.indexer.core import Indexer

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends a run as Ctrl-C does: finished work is committed

    ids = rebuild.ids if rebuild else None
    with Indexer(config, reduced="if missing", ids=ids, read_text=rebuild is None) as indexer:
        start = indexer.stats.committed
        try:
            report = indexer.scan(roots)
            bar = tqdm(total=report.queued, unit="img", disable=not (progress and os.isatty(2)), leave=False,
                       desc="indexing")
            try:
                indexer.drain(lambda s: bar.update(s.committed + s.failed + s.touched - bar.n))
            finally:
                bar.close()
            _read_text(indexer, progress)
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


def _read_text(indexer: Any, progress: bool) -> None:
    """[ocr]: every image is searchable now; its text is read before the command ends (Ctrl-C: at the next run)."""
    from tqdm import tqdm

    if indexer.ocr is None:
        return
    bar = tqdm(unit="img", disable=not (progress and os.isatty(2)), leave=False, desc="reading text in images")

    def waiting(pending: int) -> None:
        bar.total = max(bar.total or 0, pending + bar.n)
        bar.update(max(0, bar.total - pending - bar.n))

    try:
        indexer.drain_text(waiting)
    finally:
        bar.close()


def _check_roots(roots: list[Path]) -> None:
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


def cmd_rebuild(args: argparse.Namespace, config: Config) -> int:
    """The catalog and both indexes, again, from the images and their sidecars — built aside, swapped in once
    complete (indexer/rebuild.py); the old ones are moved aside (named in the output), never deleted. Ids and
    folders added with `watch add` are kept. Without model files, keywords and embeddings come from the
    sidecars alone."""
    from pixdex.indexer.catalog import Catalog
    from pixdex.indexer.core import lock_data_dir
    from pixdex.indexer.layout import Layout

    no_daemon(config, "rebuild")
    layout = config.layout
    lock = lock_data_dir(layout.root, layout.lock)  # held throughout: no daemon or index run starts meanwhile
    try:
        rebuild.finish_swap(layout)  # and removes what a rebuild cut short left
        old = rebuild.previous(layout)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        built = Layout(layout.root / f"rebuild-{stamp}.partial")
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
    from pixdex.daemon.offline import watched
    from pixdex.indexer.check import check, repair

    folders = [c.path for c in watched(config)]
    findings = check(config, folders)
    if findings and args.fix:
        no_daemon(config, "check --fix")
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
