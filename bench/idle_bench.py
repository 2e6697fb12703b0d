"""The daemon at rest and one file at a time: issue 19's acceptance check, in one run.

    nice .venv/bin/python bench/idle_bench.py [--library 3000] [--fresh 20] [--idle 60]

`pixdex serve` (bench/daemon_bench.py's `Daemon`: stand-in models, its own XDG folders, `idle_ttl = 5`)
indexes `--library` tiny PNGs; then

1. freshness: `--fresh` new PNGs written one at a time, each once the previous one was visible and 1 s
   later; file closed → first `GET /search` that lists it (polled every 20 ms);
2. idle: after every TTL passed (`--settle` seconds), each pixdex process's PSS (psutil, `memory_full_info`),
   its CPU-seconds and its voluntary context switches (each one a wake-up) over `--idle` seconds;
3. the first query after the idle time (wall time of one `GET /search`).

Prints one JSON object (also written to bench/out/idle_bench.json). No assertion: figures are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from daemon_bench import MODELS, OUT, Daemon, make_pngs, png_bytes, request, stop_running, wait_indexed  # noqa: E402

WORK = OUT / "idle"


def role(proc: psutil.Process, top: int) -> str:
    if proc.pid == top:
        return "serving"
    line = " ".join(proc.cmdline())
    if "resource_tracker" in line:
        return "resource tracker"
    if "core_child" in line or "core_process" in line:
        return "indexing"
    return proc.name() + ":" + (line[-40:] if "spawn" in line or "forkserver" in line else "worker")


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of `pid` (psutil's figure is the main thread's alone)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def anon_mb(pid: int) -> float:
    """The anonymous part of the process's PSS (what the kernel cannot drop and read again from a file)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_Anon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def biggest(pid: int, count: int = 8) -> list[tuple[str, float]]:
    """The mappings that hold most of the process's PSS (name or [anon], MiB), largest first."""
    found: dict[str, float] = {}
    name = "?"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else "[anon]"
        elif line.startswith("Pss:"):
            found[name] = found.get(name, 0.0) + int(head[1]) / 1024
    return sorted(((k, round(v, 1)) for k, v in found.items()), key=lambda kv: -kv[1])[:count]


def tree(top: int) -> list[psutil.Process]:
    parent = psutil.Process(top)
    return [parent, *parent.children(recursive=True)]


def snapshot(top: int) -> dict[int, dict[str, Any]]:
    out = {}
    for proc in tree(top):
        try:
            with proc.oneshot():
                mem = proc.memory_full_info()
                cpu = proc.cpu_times()
                out[proc.pid] = {"role": role(proc, top), "pss_mb": mem.pss / 2**20, "uss_mb": mem.uss / 2**20,
                                 "rss_mb": mem.rss / 2**20, "cpu_s": cpu.user + cpu.system,
                                 "wakeups": wakeups(proc.pid), "pss_anon_mb": anon_mb(proc.pid),
                                 "threads": proc.num_threads()}
        except psutil.Error:
            continue
    return out


def freshness(daemon: Daemon, folder: Path, count: int, seed: int = 11) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("bcdfghjklmnpqrstvwxz"))
    seen = []
    for _ in range(count):
        token = "".join(rng.choice(letters, 10))
        path = folder / f"{token}.png"
        data = png_bytes(rng)
        with open(path, "wb") as handle:
            handle.write(data)
        closed = time.monotonic()
        while time.monotonic() - closed < 60:
            status, body = request(daemon.socket, "/search", q=token, k=10)
            if status == 200 and any(h["path"] == str(path) for h in body["hits"]):
                seen.append((time.monotonic() - closed) * 1000)
                break
            time.sleep(0.02)
        time.sleep(1.0)
    ordered = sorted(seen)
    return {"count": count, "visible": len(seen), "ms": [round(s) for s in seen],
            "p50_ms": ordered[len(ordered) // 2] if ordered else None, "max_ms": ordered[-1] if ordered else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", type=int, default=3000)
    parser.add_argument("--fresh", type=int, default=20)
    parser.add_argument("--settle", type=float, default=75.0, help="seconds after the last work before measuring")
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--extra", default="", help="config text appended (TOML)")
    args = parser.parse_args()
    from pixdex.indexer import export

    if not (MODELS / "clip" / export.STANDIN_CLIP / "visual" / "model.onnx").exists():
        export.write_standin_clip(MODELS)
    if not (MODELS / "tagger" / export.STANDIN_TAGGER / "model.onnx").exists():
        export.write_standin_tagger(MODELS)
    shutil.rmtree(WORK, ignore_errors=True)
    pics = WORK / "pics"
    make_pngs(pics, args.library, seed=7)
    daemon = Daemon(WORK, [pics], args.extra)
    result: dict[str, Any] = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                              f"{psutil.cpu_count()} cores, shared with other sessions",
                              "library": args.library, "load_before": list(psutil.getloadavg())}
    try:
        started = time.monotonic()
        daemon.start()
        daemon.wait_ready()
        wait_indexed(daemon, args.library, timeout=1800)
        result["index_s"] = time.monotonic() - started
        assert daemon.proc is not None
        result["fresh"] = freshness(daemon, pics / "d000", args.fresh)
        time.sleep(args.settle)
        before = snapshot(daemon.proc.pid)
        time.sleep(args.idle)
        after = snapshot(daemon.proc.pid)
        per = []
        for pid, now in after.items():
            was = before.get(pid, {"cpu_s": 0.0, "wakeups": 0})
            per.append({**now, "pid": pid, "cpu_s": now["cpu_s"] - was["cpu_s"],
                        "wakeups": now["wakeups"] - was["wakeups"]})
        minutes = args.idle / 60
        result["mappings"] = {str(p["pid"]): biggest(p["pid"]) for p in per if p["pss_mb"] > 50}
        result["idle"] = {"processes": per, "pss_mb": sum(p["pss_mb"] for p in per),
                          "cpu_s_per_min": sum(p["cpu_s"] for p in per) / minutes,
                          "wakeups_per_min": sum(p["wakeups"] for p in per) / minutes,
                          "count": len(per), "gone": sorted(set(before) - set(after))}
        t0 = time.perf_counter()
        status, _ = request(daemon.socket, "/search", q="beach sunset", k=20)
        result["first_query_ms"] = (time.perf_counter() - t0) * 1000
        result["first_query_status"] = status
        t0 = time.perf_counter()
        request(daemon.socket, "/search", q="beach sunset", k=20)
        result["second_query_ms"] = (time.perf_counter() - t0) * 1000
        result["fresh_after_idle"] = freshness(daemon, pics / "d000", 1, seed=12)  # the workers start again
        result["problems"] = daemon.problems()[:20]
        daemon.stop()
    finally:
        stop_running()
    result["load_after"] = list(psutil.getloadavg())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "idle_bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
