"""`pixdex index --ray [ADDRESS] PATH...`: the library embedded and tagged as a Ray Data job on a cluster
(`indexer/distributed/`), then this machine's catalog filled from the sidecars the job wrote, with no model call
— the path `pixdex rebuild` and a daemon take too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixdex.daemon.commands.connect import EXIT_OK, daemon_client
from pixdex.daemon.commands.output import printable, summary_line
from pixdex.daemon.remote import DaemonLibrary
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config

ADDRESS = re.compile(r"^(auto|local|ray://\S+|[^\s/]+:\d+)$")  # what `--ray` takes as an address, not a folder


def add_arguments(index: Any) -> None:
    index.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                       help="run as a Ray Data job on the cluster at ADDRESS (ray://host:port or host:port; `auto` or "
                            "none: RAY_ADDRESS, else a local Ray instance); the nodes must see the folders at the "
                            "same paths; needs pixdex[ray]")
    index.add_argument("--ray-gpus", type=_at_least(0.0, float), metavar="N",
                       help="GPUs per model actor (onnxruntime's CUDA provider); default 0: CPU")
    index.add_argument("--ray-batch-size", type=_at_least(1, int), metavar="N",
                       help="images per batch in every stage; default: [models] batch_size")
    index.add_argument("--ray-actors", type=_at_least(1, int), metavar="N",
                       help="model actors; default: one per node (a CPU left for decoding), or the GPUs' count")


def _at_least(low: float, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low:g}")
        return value
    return parse


def wants_ray(args: argparse.Namespace) -> bool:
    """Whether `pixdex index` runs on a cluster; a folder given right after `--ray` is a folder, not an address."""
    if args.ray is None:
        extra = [f"--ray-{k}" for k in ("gpus", "batch-size", "actors") if getattr(args, f"ray_{k.replace('-', '_')}")
                 is not None]
        if extra:
            raise PixdexError(f"{extra[0]} needs --ray")
        return False
    if not ADDRESS.match(args.ray):
        args.dirs.insert(0, Path(args.ray))
        args.ray = "auto"
    return True


def cmd_index_ray(args: argparse.Namespace, config: Config, roots: list[Path],
                  fill: Callable[[Config, list[Path], bool], dict[str, Any]]) -> int:
    """The job, its summary, then the catalog filled from the sidecars by `fill` (`indexing.index_folders`), as
    `pixdex index` fills it — unless a daemon serves this data directory: it takes the sidecars up as it scans its
    folders, and a folder it does not watch is added to them once the job is done (`watch add`: a collection)."""
    client = daemon_client(config)
    library = DaemonLibrary(client) if client is not None else None
    unwatched = _unwatched(roots, library.watches()) if library is not None else []
    try:
        # Late, deliberately: Ray (~1 s to import, an optional extra) loads only for `--ray`.
        from pixdex.indexer.distributed.cluster import JobSettings
        from pixdex.indexer.distributed.job import run_job
    except ImportError as exc:
        raise PixdexError(f"--ray needs Ray: pip install 'pixdex[ray]' ({exc})") from None
    from tqdm import tqdm

    for root in unwatched:
        print(f"{printable(str(root))}: the running daemon does not watch it; it will once the job is done, and "
              "take the job's sidecars up", file=sys.stderr)
    settings = JobSettings(None if args.ray == "auto" else args.ray, args.ray_gpus or 0.0, args.ray_batch_size,
                           args.ray_actors)
    bars: list[Any] = []

    def progress(total: int) -> Callable[[], None]:
        bars.append(tqdm(total=total, unit="img", desc="ray", disable=args.json or not os.isatty(2), leave=False))
        return lambda: bars[0].update()

    try:
        # Ray prints what the workers log on the driver's stdout: onto stderr with the rest of the job's lines, so
        # stdout carries the summary alone (`--json`).
        with contextlib.redirect_stdout(sys.stderr):
            report = run_job(config, roots, settings, lambda line: print(line, file=sys.stderr), progress)
    except KeyboardInterrupt:
        print("pixdex: interrupted; the sidecars written so far stay, and the next `pixdex index --ray` skips "
              "their images", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        for bar in bars:
            bar.close()
    job = report.as_dict()
    if not args.json:
        _print_job(job)
    catalog, watching = None, []
    if library is None:
        catalog = fill(config, roots, not args.json)
        if not args.json:
            print(f"catalog filled from the sidecars: {summary_line(catalog)}; {catalog['from_sidecars']} taken "
                  f"from sidecars, {catalog['inference_calls']} model call(s)")
    else:
        # Only now: watched before the job, the daemon would have embedded the folder itself meanwhile.
        watching = [library.watch_add(str(root), None) for root in unwatched]
        if not args.json:
            for added in watching:
                print(f"the daemon now watches {printable(added['path'])} as {added['name']} (query with "
                      f"in:{added['name']}; `pixdex watch remove {added['name']}` undoes it)", file=sys.stderr)
            print("the running daemon takes the sidecars up as it scans its folders", file=sys.stderr)
    if args.json:
        print(json.dumps({"ray": job, "catalog": catalog, "watching": watching}, indent=2))
    return EXIT_OK


def _unwatched(roots: list[Path], watches: list[dict[str, Any]]) -> list[Path]:
    """The folders no watched folder holds (nor an earlier one of them): those a running daemon would never scan."""
    held = [os.path.realpath(w["path"]) for w in watches]
    out: list[Path] = []
    for root in roots:
        real = os.path.realpath(root)
        if not any(real == h or real.startswith(h.rstrip("/") + "/") for h in [*held, *map(str, out)]):
            out.append(Path(real))
    return out


def _print_job(job: dict[str, Any]) -> None:
    rate = job["images_per_second"]
    nodes = ", ".join(f"{label} {count}" for label, count in job["nodes"].items())
    print(f"ray: {job['images']} image(s): {job['indexed']} indexed, {job['skipped']} already done, {job['failed']} "
          f"failed; {job['seconds']:.1f} s, {rate:.1f} images/s; {len(job['nodes'])} node(s) used: {nodes or 'none'}")
    for path, reason in job["failures"][:20]:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    if len(job["failures"]) > 20:
        print(f"  … and {len(job['failures']) - 20} more: see `pixdex failures`", file=sys.stderr)
    for path, reason in job["folder_errors"]:
        print(f"  skipped folder: {path}: {reason}", file=sys.stderr)
    if job["log"]:
        print(f"  the job's log and its Parquet manifest: {printable(str(Path(job['log']).parent))}", file=sys.stderr)
