"""The Ray cluster a job runs on: connecting (`connect`), its live nodes (`nodes`), the `map_batches` arguments
a job uses unless told otherwise (`resolve`), and the check that every node reads the library at the same path
(`check_readable`).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pixdex.indexer.errors import PixdexError
from pixdex.indexer.paths import display_path

PROBED = 3  # files each node must read before the job starts
REACH_SECONDS = 10.0


@dataclass(frozen=True)
class Node:
    id: str
    ip: str
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        return f"{self.ip} ({self.id[:8]})"


@dataclass(frozen=True)
class JobSettings:
    """`--ray [ADDRESS]`, `--ray-gpus`, `--ray-batch-size`, `--ray-actors`; None: the default (`resolve`)."""

    address: str | None = None  # None or "auto": RAY_ADDRESS, else the cluster `ray start` made here, else local
    gpus: float = 0.0  # per model actor (`map_batches(num_gpus=…)`)
    batch_size: int | None = None  # images per batch in every stage; default: [models] batch_size
    actors: int | None = None  # model actors (`map_batches(concurrency=…)`)


def connect(address: str | None) -> None:
    """Join the cluster at `address` (see `JobSettings.address`). Raises PixdexError with one line when it
    cannot."""
    target = None if address in (None, "auto") else address
    reach(target or os.environ.get("RAY_ADDRESS") or "local")
    try:
        ray.init(address=target, logging_level=logging.WARNING, configure_logging=True, log_to_driver=True,
                 ignore_reinit_error=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local instance"
        raise PixdexError(f"--ray {where}: cannot join the Ray cluster: {str(exc).splitlines()[0]}") from None


def reach(address: str) -> None:
    """A `host:port` (or `ray://host:port`) address answers on TCP within `REACH_SECONDS`, or PixdexError says so
    — `ray.init` itself keeps trying an address where nothing listens for minutes."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_SECONDS).close()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise PixdexError(f"--ray {address}: cannot reach a Ray cluster there ({why}); start one with "
                          "`ray start --head` and pass the address it prints") from None


def nodes(alive_only: bool = True) -> list[Node]:
    return [Node(str(n["NodeID"]), str(n["NodeManagerAddress"]), float(n["Resources"].get("CPU", 0)),
                 float(n["Resources"].get("GPU", 0))) for n in ray.nodes() if n.get("Alive") or not alive_only]


def resolve(settings: JobSettings, live: list[Node], batch_size: int) -> JobSettings:
    """The settings a job runs with: the batch size of [models]; with GPUs, as many actors as the cluster's GPUs
    hold; on CPUs, one actor per node, leaving each node a CPU for decoding and sidecar writing."""
    cpus, gpus = sum(n.cpus for n in live), sum(n.gpus for n in live)
    if settings.gpus > gpus:
        raise PixdexError(f"--ray-gpus {settings.gpus:g}: the cluster has {gpus:g} GPU(s)")
    actors = settings.actors
    if actors is None:
        actors = int(gpus // settings.gpus) if settings.gpus > 0 else int(min(len(live), cpus - len(live)))
    return JobSettings(settings.address, settings.gpus, settings.batch_size or batch_size, max(1, actors))


def _first_bytes(paths: list[bytes]) -> list[tuple[bytes, str]]:
    """The paths this node cannot read, with why (runs on each node)."""
    failed = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            failed.append((path, exc.strerror or str(exc)))
    return failed


def check_readable(paths: list[bytes], live: list[Node]) -> None:
    """Every node reads the first files at the driver's paths (the library on shared storage), or PixdexError
    names the node, the file and why."""
    first = paths[:PROBED]
    if not first:
        return
    probe = ray.remote(num_cpus=0, max_retries=0)(_first_bytes)
    pending = {node: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False))
               .remote(first) for node in live}
    for node, ref in pending.items():
        try:
            failed = ray.get(ref, timeout=120)
        except Exception as exc:  # noqa: BLE001 - any failure of the probe on a node means the job cannot use it
            raise PixdexError(f"node {node.label} cannot run pixdex's job ({str(exc).splitlines()[0]}); install "
                              "pixdex[ray] in the same environment on every node") from None
        if failed:
            path, why = failed[0]
            raise PixdexError(f"node {node.label} cannot read {display_path(path)} ({why}): every node must see the "
                              "library at the same path (shared storage: NFS, CephFS, SMB)")
