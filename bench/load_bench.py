"""Fifty clients at once against the real daemon: thumbnails (new, then cached), /status, /search, /health.

    .venv/bin/python bench/load_bench.py [--clients 50] [--images 300] [--seconds 30] [--rate 250] [--baseline REV]

`pixdex serve` runs as a subprocess on temporary XDG folders with the stand-in models (daemon_bench's
`Daemon`) over a library of generated 2000×1500 JPEGs, indexed before anything is measured. Every client
is a thread holding one keep-alive TCP connection with the token, as the web page's browser does; the
requests of each phase are spread over the clients:

1. new thumbnails: the 256-px thumbnail of every image once (each made by the indexing process's decode
   workers), with a /status or /search after every fourth;
2. cached thumbnails: for `--seconds`, requests picked at random — 70% /thumbnail of an image whose
   thumbnail is cached, 10% /status, 10% /search, 10% /health — at `--rate` requests/s in all (each
   client paced; a late request is timed from when it was due). Paced, because with every client
   sending its next request at once, whichever route is slowest holds most clients and the figures
   say more about the mix than about the routes.

Per route: p50 / p90 / p99 / max latency (ms), requests, errors, and requests/s of the phase.
`--baseline REV` runs the same phases first on the daemon of commit REV (its daemon/, indexer/ and query/
from `git archive`, imported through PYTHONPATH ahead of the editable install, run by this venv), so the
page shows before and after from one run on one machine.

Figures go to docs/BENCHMARKS.md (the "load_bench" section) and bench/out/load_bench.json. No timing
assertions: the figures are reported as seen.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import io
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from core_bench import log, prepare_models  # noqa: E402
from daemon_bench import MODELS, Daemon, machine, pct, revision, stop_running  # noqa: E402
from index_bench import replace_section  # noqa: E402

OUT = REPO / "bench" / "out"
WORK = OUT / "load"
SEED = 17
QUERIES = ("beach sunset", "harbour boats", "red flower", "mountain snow", "city night", "dog park")


def make_jpegs(folder: Path, count: int) -> None:
    """Smooth colour fields with noise: each a different picture, about 0.5 MB as a JPEG."""
    rng = np.random.default_rng(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:1500, 0:2000]
    for n in range(count):
        a, b, c = rng.uniform(0.001, 0.01, 3)
        base = np.stack([np.sin(x * a + n), np.cos(y * b + n), np.sin((x + y) * c)], axis=-1)
        noisy = (base * 100 + 128 + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"photo_{n:04d}.jpg", quality=88)


def baseline_code(rev: str) -> Path:
    """daemon/, indexer/ and query/ of commit `rev` as a `pixdex` package under WORK/code-REV."""
    root = WORK / f"code-{rev}"
    if root.exists():
        shutil.rmtree(root)
    package = root / "pixdex"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "daemon", "indexer", "query"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(package, filter="data")
    return root


# Clients -----------------------------------------------------------------------------------------------------


class Client:
    """One keep-alive TCP connection with the token; reconnects when the daemon closed it."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Host": "127.0.0.1", "Authorization": f"Bearer {token}"}
        self.connection: http.client.HTTPConnection | None = None

    def get(self, path: str) -> int:
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.connection.request("GET", path, headers=self.headers)
                response = self.connection.getresponse()
                response.read()
                return response.status
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    return 0
        return 0


def run_clients(port: int, token: str, clients: int, next_request: Callable[[], tuple[str, str] | None],
                pace: float = 0.0) -> dict[str, Any]:
    """`clients` threads, each taking (route name, path) from `next_request` until it returns None; with
    `pace`, each sends one request every `pace` seconds (a late one is timed from when it was due, so a
    slow answer is not hidden by the requests it delayed), else the next as soon as one is answered."""
    seen: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def work(offset: float) -> None:
        client = Client(port, token)
        due = time.perf_counter() + offset
        while (task := next_request()) is not None:
            name, path = task
            if pace:
                time.sleep(max(0.0, due - time.perf_counter()))
            began = due if pace else time.perf_counter()
            due += pace
            status = client.get(path)
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                seen.setdefault(name, []).append(elapsed)
                if status != 200:
                    errors[name] = errors.get(name, 0) + 1

    began = time.perf_counter()
    threads = [threading.Thread(target=work, args=(pace * n / clients,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    routes = {name: pct(ms) | {"errors": errors.get(name, 0)} for name, ms in seen.items()}
    everything = [x for ms in seen.values() for x in ms]
    return {"wall": wall, "per_second": len(everything) / wall, "all": pct(everything) | {
        "errors": sum(errors.values())}, "routes": routes}


def cold_phase(daemon: Daemon, port: int, token: str, ids: list[int], clients: int) -> dict[str, Any]:
    tasks: queue.Queue[tuple[str, str]] = queue.Queue()
    for n, image in enumerate(ids):
        tasks.put(("thumbnail (new)", f"/thumbnail/{image}?size=256"))
        if n % 4 == 3:
            query = QUERIES[n % 6].replace(" ", "+")
            tasks.put(("status", "/status") if n % 8 == 3 else ("search", f"/search?q={query}"))

    def next_request() -> tuple[str, str] | None:
        try:
            return tasks.get_nowait()
        except queue.Empty:
            return None

    return run_clients(port, token, clients, next_request)


def warm_phase(port: int, token: str, ids: list[int], clients: int, seconds: float, rate: float
               ) -> dict[str, Any]:
    rng = random.Random(SEED)
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def next_request() -> tuple[str, str] | None:
        if time.monotonic() > until:
            return None
        with lock:
            pick = rng.random()
            image = rng.choice(ids)
            words = rng.choice(QUERIES).replace(" ", "+")
        if pick < 0.7:
            return "thumbnail (cached)", f"/thumbnail/{image}?size=256"
        if pick < 0.8:
            return "status", "/status"
        if pick < 0.9:
            return "search", f"/search?q={words}&k=20"
        return "health", "/health"

    return run_clients(port, token, clients, next_request, pace=clients / rate)


def listed(daemon: Daemon, pics: Path, count: int) -> list[int]:
    """The ids of the library's images, once the text index lists them all (it commits after the catalog)."""
    deadline = time.monotonic() + 120
    while True:
        ids = sorted(h["id"] for h in daemon.get("/search", q=f'folder:"{pics}"', k=10000)["hits"])
        if len(ids) >= count or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


def measure(label: str, code: Path | None, args: argparse.Namespace, pics: Path) -> dict[str, Any]:
    root = WORK / label
    if root.exists():
        shutil.rmtree(root)
    daemon = Daemon(root, [pics], extra="[sidecar]\nwrite = false\n")  # both runs index the same folder afresh
    if code is not None:
        daemon.env["PYTHONPATH"] = str(code)
    daemon.start()
    try:
        daemon.wait_ready()
        log(f"{label}: indexing {args.images} images")
        deadline = time.monotonic() + 1800
        while True:
            status = daemon.status()
            if status["counts"].get("done", 0) >= args.images and not sum(status["queue"].values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: the library was not indexed within 30 minutes: {status['counts']}")
            time.sleep(1)
        ids = listed(daemon, pics, args.images)
        token = json.loads((root / "state" / "pixdex" / "tokens.json").read_text())["tokens"][0]["token"]
        port = int(daemon.config.read_text().split("port = ")[1].split()[0])
        random.Random(SEED).shuffle(ids)
        log(f"{label}: new thumbnails, {args.clients} clients")
        cold = cold_phase(daemon, port, token, ids, args.clients)
        log(f"{label}: cached thumbnails and the rest, {args.clients} clients, {args.rate:g}/s for {args.seconds:g} s")
        warm = warm_phase(port, token, ids, args.clients, args.seconds, args.rate)
    finally:
        daemon.stop()
    return {"cold": cold, "warm": warm, "code": "this working tree"}


# The page -------------------------------------------------------------------------------------------------------


def table(runs: dict[str, dict[str, Any]], phase: str) -> list[str]:
    labels = list(runs)
    head = "| route | " + " | ".join(f"{label}: p50 / p90 / p99 / max (ms), n, errors" for label in labels) + " |"
    lines = [head, "|---|" + "---:|" * len(labels)]
    names = [*sorted({name for run in runs.values() for name in run[phase]["routes"]}), "all"]
    for name in names:
        cells = []
        for label in labels:
            result = runs[label][phase]
            s = result["all"] if name == "all" else result["routes"].get(name, {"n": 0})
            cells.append("–" if not s["n"] else f"{s['p50']:,.0f} / {s['p90']:,.0f} / {s['p99']:,.0f} / "
                                                f"{s['max']:,.0f}, {s['n']:,}, {s['errors']}")
        lines.append(f"| {'**all**' if name == 'all' else name} | " + " | ".join(cells) + " |")
    rates = " | ".join(f"{runs[label][phase]['per_second']:,.1f}" for label in labels)
    walls = " / ".join(f"{runs[label][phase]['wall']:.1f}" for label in labels)
    lines.append(f"| requests/s (wall {walls} s) | {rates} |")
    return lines


def ratios(runs: dict[str, dict[str, Any]]) -> list[str]:
    if len(runs) != 2:
        return []
    before, after = runs.values()
    out = []
    for phase, route in (("warm", "thumbnail (cached)"), ("warm", "status"), ("warm", "search"), ("cold", "status"),
                         ("cold", "search"), ("cold", "thumbnail (new)")):
        b, a = before[phase]["routes"].get(route), after[phase]["routes"].get(route)
        if b and a and b["n"] and a["n"]:
            out.append(f"{route} ({'cached' if phase == 'warm' else 'new-thumbnail'} phase): p50 {b['p50']:,.0f} → "
                       f"{a['p50']:,.0f} ms ({b['p50'] / a['p50']:.1f}×), p99 {b['p99']:,.0f} → {a['p99']:,.0f} ms "
                       f"({b['p99'] / a['p99']:.1f}×)")
    return out


def report(result: dict[str, Any]) -> str:
    runs = result["runs"]
    lines = [
        "## Fifty clients at once: thumbnails, status, search (`bench/load_bench.py`)",
        "",
        f"- Machine: {result['machine']}",
        f"- Command: `{result['command']}` ({result['minutes']:.1f} min wall, {result['date']}); {result['revision']}",
        f"- Load average (1 min) at the start and the end: {result['load'][0]:.1f} / {result['load'][1]:.1f} on a "
        "machine shared with other work: absolute figures move from run to run, the before/after ratios are taken "
        "within one run.",
        f"- {result['images']} generated 2000×1500 JPEGs, indexed first with the stand-in models; {result['clients']} "
        "client threads in the bench process, each with one keep-alive TCP connection and the token.",
        "- Columns: " + "; ".join(f"**{label}** = {run['code']}" for label, run in runs.items()) + ".",
        "",
        "New thumbnails: the 256-px thumbnail of every image once, made by the indexing process's decode workers, "
        "with a /status or /search after every fourth; each client sends its next request when one is answered.",
        "",
        *table(runs, "cold"),
        "",
        f"Cached thumbnails: {result['seconds']:g} s of requests picked at random, 70% /thumbnail (cached), 10% each "
        f"/status, /search and /health, {result['rate']:g} requests/s in all (each client one every "
        f"{result['clients'] / result['rate'] * 1000:.0f} ms; a late request is timed from when it was due).",
        "",
        *table(runs, "warm"),
    ]
    found = ratios(runs)
    if found:
        lines += ["", "Before → after in the same run (× = before / after):", "", *(f"- {line}" for line in found)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the cached-thumbnail phase")
    parser.add_argument("--rate", type=float, default=250.0, help="requests/s of all clients in that phase")
    parser.add_argument("--baseline", help="a commit to measure first, for before/after figures")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()
    atexit.register(stop_running)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started, rev, load_start = time.monotonic(), revision(), os.getloadavg()[0]
    WORK.mkdir(parents=True, exist_ok=True)
    prepare_models(MODELS, "")
    pics = WORK / "pics"
    if len(list(pics.glob("*.jpg"))) != args.images:
        shutil.rmtree(pics, ignore_errors=True)
        log(f"making {args.images} JPEGs")
        make_jpegs(pics, args.images)
    runs: dict[str, dict[str, Any]] = {}
    if args.baseline:
        label = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline], capture_output=True,
                               text=True, check=True).stdout.strip()
        runs["before"] = measure(f"before-{label}", baseline_code(label), args, pics)
        runs["before"]["code"] = f"commit {label}"
    runs["after"] = measure("after", None, args, pics)
    command = ".venv/bin/python bench/load_bench.py" + "".join(
        f" --{k} {getattr(args, k):g}" for k, default in (("clients", 50), ("images", 300), ("seconds", 30.0),
                                                            ("rate", 250.0))
        if getattr(args, k) != default) + (f" --baseline {args.baseline}" if args.baseline else "")
    result = {"machine": machine(), "command": command, "revision": rev, "date": time.strftime("%Y-%m-%d"),
              "minutes": (time.monotonic() - started) / 60, "images": args.images, "clients": args.clients,
              "seconds": args.seconds, "rate": args.rate, "runs": runs,
              "load": [load_start, os.getloadavg()[0]]}
    (OUT / "load_bench.json").write_text(json.dumps(result, indent=2))
    replace_section(args.out, "load_bench", report(result))
    print(report(result))


if __name__ == "__main__":
    main()
