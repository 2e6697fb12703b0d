"""The real daemon end to end: freshness, query latency while indexing, CLI start-up, memory, restart.

    .venv/bin/python bench/daemon_bench.py [--quick]

One command measures, within one run, `pixdex serve` started as a subprocess on temporary XDG
folders with the stand-in models (the real code paths; tiny models), talked to over its Unix
socket (one connection per request, as `pixdex search` does):

1. freshness: with a library the daemon indexed itself (tiny 16×12 PNGs; 10,000 by default), new
   images are written one at a time, each once the previous one was visible, 0.5 s apart; the time
   from the file's close to the first `GET /search?q=<its unique name word>` that lists it, with the
   daemon's own milestones for the same file from `GET /events` (scan queued it, the model stage
   finished, the commit was announced) and, measured apart, what the models cost for one image;
2. `GET /search?q=<text>&k=20` latency at 20 queries/s, idle and while the daemon indexes a batch
   of new images copied in at once (3,000 by default);
3. `pixdex search` start-up against the running daemon (wall time and time to the first byte of
   output) and without a daemon (direct mode), and `python -X importtime` of both;
4. RSS (psutil) of the daemon process and of each worker process: peak while indexing, idle with
   the models loaded, and idle after `[models] idle_ttl = 5` unloaded them;
5. restart to READY: `pixdex serve` start → the socket answers `/health`, and → READY=1 on a
   NOTIFY_SOCKET datagram socket this script binds; then the first query and the end of the
   start-up reconcile. Once over the library of part 1, and over a catalog of 100,000 items
   synthesized through core_bench's `Library` (the real `Writer`; the daemon's model ids) whose
   files exist on disk (identical tiny PNGs, 1,000 per folder), so the reconcile walks them all.

Figures go to docs/BENCHMARKS.md (the "daemon_bench" section) and bench/out/daemon_bench.json
(``--from-json`` writes the page again from it). No timing assertions anywhere: anything that looks
wrong is reported as it was seen.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

from pixdex.daemon.client import UnixConnection

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from core_bench import Library, cpu_seconds, import_profile, log, own_cpu, synth_batch  # noqa: E402
from index_bench import replace_section  # noqa: E402

OUT = REPO / "bench" / "out"
WORK = OUT / "daemon"
MODELS = OUT / "models"  # the stand-ins, shared with core_bench
PIXDEX = Path(sys.executable).parent / "pixdex"
SEED = 7
PER_DIR = 1000
QUERY_RATE = 20.0  # queries per second in part 2
POLL = 0.02  # seconds between two freshness polls
CLI_QUERY = "beach sunset"


# Tiny images ------------------------------------------------------------------------------------------------


def png_bytes(rng: np.random.Generator) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def make_pngs(folder: Path, count: int, seed: int, per_dir: int = PER_DIR) -> list[Path]:
    """`count` distinct 16×12 PNGs of random pixels, `per_dir` to a subfolder."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        sub = folder / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img_{i:06d}.png"
        path.write_bytes(png_bytes(rng))
        paths.append(path)
    return paths


# Other processes' CPU use: this script, the daemons it runs and their workers are subtracted ----------------

RUNNING: dict[int, psutil.Process] = {}  # daemons started and not reaped yet


def workers_cpu(proc: psutil.Process) -> float:
    """CPU-seconds of a daemon's worker processes: those it reaped and those still running."""
    t = proc.cpu_times()
    total = t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def tree_cpu(proc: psutil.Process) -> float:
    """CPU-seconds of a live daemon and all its workers."""
    try:
        t = proc.cpu_times()
        return t.user + t.system + workers_cpu(proc)
    except psutil.Error:
        return 0.0


def others_cpu() -> float:
    """CPU-seconds the machine spent on processes that are not this run's, so far (from /proc/stat; a reaped
    daemon's time is in this process's RUSAGE_CHILDREN, a live one's is read from its process tree)."""
    return cpu_seconds() - own_cpu() - sum(tree_cpu(p) for p in list(RUNNING.values()))


DISTURBED: dict[str, float] = {}


def stop_running() -> None:
    """At exit, however this script ends: no daemon of this run stays behind (SIGTERM to its process group,
    SIGKILL after 30 s)."""
    for pid in list(RUNNING):
        try:
            os.killpg(pid, signal.SIGTERM)
            RUNNING[pid].wait(30)
        except psutil.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, psutil.Error):
            pass
        RUNNING.pop(pid, None)


def stop_leftovers() -> None:
    """Daemons an earlier run of this script left (killed with SIGKILL, say): they serve folders under WORK,
    which this run deletes and makes again, and would index them beside this run's daemons."""
    config = str(WORK) + "/"
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "serve" in cmdline and any(a.startswith(config) for a in cmdline):
            log(f"stopping pid {proc.pid}, a daemon an earlier run left: {' '.join(cmdline)[:200]}")
            try:
                proc.terminate()
                proc.wait(30)
            except psutil.TimeoutExpired:
                proc.kill()
            except psutil.Error:
                pass


class disturbed:
    def __init__(self, part: str) -> None:
        self.part = part

    def __enter__(self) -> None:
        self.start = others_cpu()

    def __exit__(self, *exc: object) -> None:
        DISTURBED[self.part] = DISTURBED.get(self.part, 0.0) + max(0.0, others_cpu() - self.start)


# Talking to the daemon --------------------------------------------------------------------------------------


def request(sock: Path, route: str, timeout: float = 60, **params: Any) -> tuple[int, Any]:
    """One GET on a new connection (as `pixdex.daemon.client` makes them); (status, parsed JSON)."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    connection = UnixConnection(str(sock), timeout)
    try:
        connection.request("GET", route + (f"?{query}" if query else ""), headers={"Host": "localhost"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(payload)
    return response.status, payload


class Daemon:
    """`pixdex serve` on its own XDG folders (tests/served.py's idea, copied: bench/ imports nothing from tests/)."""

    def __init__(self, root: Path, folders: list[Path], extra: str = "") -> None:
        self.root = root
        self.folders = folders
        self.config = root / "config" / "pixdex" / "config.toml"
        self.config.parent.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.config.write_text(
            f"[library]\nfolders = {json.dumps([str(f) for f in folders])}\n"
            f"[paths]\nmodel_dir = {json.dumps(str(MODELS))}\n"
            '[models]\nclip = "pixdex-standin-clip"\ntagger = "pixdex-standin-tagger"\nidle_ttl = 5\n'
            # The stand-in's random text tower relates random words to random vocabulary tags: a file's unique
            # name word would then compete with images tagged with its "related" concept.
            '[search]\nrelated_tags = 1\n'
            f"[server]\nport = {port}\n" + extra)
        self.env = dict(os.environ)
        for key, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"),
                         ("XDG_STATE_HOME", "state"), ("XDG_RUNTIME_DIR", "run")):
            self.env[key] = str(root / sub)
        (root / "run").mkdir(mode=0o700, exist_ok=True)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "JOURNAL_STREAM"):
            self.env.pop(key, None)
        self.log = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "run" / "pixdex" / "pixdex.sock"

    @property
    def data(self) -> Path:
        return self.root / "data" / "pixdex"

    def start(self, notify: Path | None = None) -> None:
        env = dict(self.env)
        if notify is not None:
            env["NOTIFY_SOCKET"] = str(notify)
        with open(self.log, "ab") as handle:
            self.proc = subprocess.Popen([str(PIXDEX), "--config", str(self.config), "serve"], env=env,
                                         stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING[self.proc.pid] = psutil.Process(self.proc.pid)

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            status, body = request(self.socket, "/health", timeout=5)
        except OSError:
            return False
        return status == 200 and bool(body.get("ok"))

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not answer /health:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 120) -> float:
        """SIGTERM; returns the seconds until it exited."""
        assert self.proc is not None
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise RuntimeError(f"the daemon did not stop within {timeout} s of SIGTERM") from None
            finally:
                RUNNING.pop(self.proc.pid, None)
        RUNNING.pop(self.proc.pid, None)
        return time.perf_counter() - t0

    def get(self, route: str, **params: Any) -> Any:
        status, body = request(self.socket, route, **params)
        if status != 200:
            raise RuntimeError(f"GET {route} {params}: HTTP {status}: {body!r}")
        return body

    def status(self) -> dict[str, Any]:
        return dict(self.get("/status"))

    def problems(self) -> list[str]:
        """Log records at WARNING or above from the daemon's log so far, each with its traceback."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        out: list[str] = []
        for line in text.splitlines():
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line:
                out.append(line)
            elif out and (line.startswith((" ", "Traceback")) or not line[:2].isdigit()):
                out[-1] += "\n" + line  # the record's continuation (a traceback)
        return out


def wait_indexed(daemon: Daemon, expected: int, timeout: float, every: float = 1.0) -> dict[str, Any]:
    """Until `expected` items are done (or failed) and nothing is queued, scanning or dirty."""
    deadline = time.monotonic() + timeout
    while True:
        status = daemon.status()
        counts = status["counts"]
        if (counts["done"] + counts["failed"] >= expected and not sum(status["queue"].values())
                and not status["progress"]["scanning"] and not status["progress"]["dirty_folders"]):
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"not indexed after {timeout} s: {json.dumps(status)[:2000]}")
        time.sleep(every)


class Events:
    """`GET /events` (Server-Sent Events) read on a thread: (monotonic time, kind, data) as each arrives."""

    def __init__(self, sock: Path) -> None:
        self.connection = UnixConnection(str(sock), timeout=None)
        self.connection.request("GET", "/events", headers={"Host": "localhost"})
        self.response = self.connection.getresponse()
        self.seen: list[tuple[float, str, dict[str, Any]]] = []
        self.finished: dict[str, float] = {}  # path → when its `indexed` (or `failed`) event arrived
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        kind, data = "", ""
        try:
            while line := self.response.readline():
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    kind = text[7:]
                elif text.startswith("data: "):
                    data = text[6:]
                elif not text and kind:
                    now, parsed = time.monotonic(), json.loads(data)
                    with self.lock:
                        self.seen.append((now, kind, parsed))
                        if kind in ("indexed", "failed"):
                            self.finished.setdefault(str(parsed.get("path")), now)
                    kind, data = "", ""
        except Exception:  # noqa: BLE001 - the stream ends when close() shuts the socket under it
            pass

    def after(self, t0: float) -> list[tuple[float, str, dict[str, Any]]]:
        with self.lock:
            return [e for e in self.seen if e[0] >= t0]

    def close(self) -> None:
        try:
            assert self.connection.sock is not None
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()
        self.thread.join(timeout=5)


# Memory ---------------------------------------------------------------------------------------------------


class Memory:
    """RSS of the daemon and of each process below it, by role; a thread keeps the peaks while sampling."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.roles: dict[int, str] = {}
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def role(self, child: psutil.Process) -> str:
        if child.pid not in self.roles:
            try:
                cmdline = " ".join(child.cmdline())
                if "resource_tracker" in cmdline:
                    role = "resource tracker"
                elif child.ppid() == self.proc.pid:
                    role = "indexing process"
                elif any("onnxruntime" in m.path for m in child.memory_maps()):
                    role = "model worker"
                elif "multiprocessing" in cmdline:
                    role = "decode worker"
                else:
                    role = "other: " + cmdline[:60]
            except psutil.Error:
                return "gone"
            self.roles[child.pid] = role
        return self.roles[child.pid]

    def sample(self) -> dict[str, float]:
        """MiB per role (decode workers summed, with their count), and the total."""
        info = self.proc.memory_info()
        out: dict[str, float] = {"daemon": info.rss / 2**20}
        counts: dict[str, int] = {}
        for child in self.proc.children(recursive=True):
            try:
                rss = child.memory_info().rss / 2**20
            except psutil.Error:
                continue
            role = self.role(child)
            out[role] = out.get(role, 0.0) + rss
            counts[role] = counts.get(role, 0) + 1
        out["total"] = sum(v for k, v in out.items())
        out["decode workers"] = float(counts.get("decode worker", 0))
        out["daemon file-backed"] = info.shared / 2**20  # mapped files and libraries, of the daemon's RSS
        return out

    def start(self, every: float = 0.25) -> None:
        self.peaks = {}
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            try:
                for key, value in self.sample().items():
                    self.peaks[key] = max(self.peaks.get(key, 0.0), value)
            except psutil.Error:
                pass
            self._stop.wait(every)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return dict(self.peaks)


# Statistics -----------------------------------------------------------------------------------------------


def pct(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"n": 0}
    a = np.array(ms)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "min": float(a.min()), "max": float(a.max()),
            "mean": float(a.mean())}


def text_queries(count: int, seed: int = 11) -> list[str]:
    """1–3 words, mostly the stand-in tagger's tags (what the library's text side holds), some unknown."""
    from pixdex.indexer.export import STANDIN_GENERAL_TAGS

    words = [t.replace("_", " ") for t in STANDIN_GENERAL_TAGS if t.isascii() and t[0].isalpha()]
    words += ["holiday", "grandma", "receipt", "whiteboard", "img", "png"]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, int(rng.integers(1, 4)), replace=False)) for _ in range(count)]


def timed_query(sock: Path, q: str, k: int = 20) -> tuple[float, float, int]:
    """(start, milliseconds, hits) of one GET /search on a new connection."""
    t0 = time.monotonic()
    status, body = request(sock, "/search", q=q, k=k)
    ms = (time.monotonic() - t0) * 1000
    if status != 200:
        raise RuntimeError(f"/search q={q!r}: HTTP {status}: {body!r}")
    return t0, ms, len(body["hits"])


def paced_queries(sock: Path, queries: list[str], until: Any = None) -> list[tuple[float, float, int]]:
    """Queries at QUERY_RATE per second (a query that runs late starts the next at once); with `until`,
    going round the list until it returns True."""
    out = []
    interval = 1.0 / QUERY_RATE
    next_at = time.monotonic()
    i = 0
    while True:
        if until is None and i >= len(queries):
            break
        if until is not None and until():
            break
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at = max(next_at + interval, time.monotonic() - interval)
        out.append(timed_query(sock, queries[i % len(queries)]))
        i += 1
    return out


# 1–4. The live daemon over the library it indexed -----------------------------------------------------------


def live_part(args: argparse.Namespace) -> dict[str, Any]:
    root = WORK / "live"
    shutil.rmtree(root, ignore_errors=True)
    pics = root / "pics"
    staging = root / "staging"  # outside the watched folder
    t0 = time.perf_counter()
    make_pngs(pics, args.library, seed=SEED)
    for n in range(args.load_rounds):
        make_pngs(staging / f"round{n + 1}", args.batch, seed=SEED + 1 + n, per_dir=args.batch)
    generated = time.perf_counter() - t0
    log(f"generated {args.library} + {args.load_rounds} × {args.batch} PNGs in {generated:.1f} s")
    result: dict[str, Any] = {"library": args.library, "batch": args.batch, "generate_s": generated}

    daemon = Daemon(root, [pics])
    t0 = time.perf_counter()
    daemon.start()
    daemon.wait_ready()
    memory = Memory(daemon.proc.pid)  # type: ignore[union-attr]
    result["first_start_s"] = time.perf_counter() - t0
    memory.start()
    with disturbed("indexing"):
        status = wait_indexed(daemon, args.library, timeout=3600)
    result["index"] = {"seconds": time.perf_counter() - t0, "counts": status["counts"],
                       "rss_peak_mib": memory.stop()}
    result["index"]["rate"] = args.library / result["index"]["seconds"]
    log(f"indexed {args.library} in {result['index']['seconds']:.0f} s: {json.dumps(result['index'])}")

    # 2a. Idle query latency (warm: the query text tower loaded by the warm-up).
    queries = text_queries(args.queries)
    for q in queries[:10]:
        timed_query(daemon.socket, q)
    result["rss_idle_loaded_mib"] = memory.sample()
    with disturbed("idle queries"):
        idle = paced_queries(daemon.socket, queries)
    result["query_idle"] = pct([ms for _, ms, _ in idle])
    result["query_idle"]["hits_mean"] = float(np.mean([h for _, _, h in idle]))
    log(f"idle queries: {json.dumps(result['query_idle'])}")

    # 2b and 4. Queries and memory while a batch is indexed (more than once: how much the figure moves).
    total = args.library  # the freshness files come last
    result["loads"] = []
    for n in range(args.load_rounds):
        total += args.batch
        with disturbed(f"load {n + 1}"):
            result["loads"].append(under_load(daemon, memory, staging / f"round{n + 1}", pics / f"batch{n + 1}",
                                              queries, total))
        log(f"under load {n + 1}: {json.dumps(result['loads'][-1])}")
        time.sleep(3)

    # 4. Idle after the models' TTL.
    result["unload"] = idle_unloaded(daemon, memory)
    log(f"idle after unload: {json.dumps(result['unload'])}")

    # 3. The command line, against the daemon.
    with disturbed("CLI"):
        result["cli_daemon"] = cli_runs(daemon, args.cli_runs)
    log(f"cli through the daemon: {json.dumps({k: v for k, v in result['cli_daemon'].items() if k != 'imports'})}")
    result["problems_live"] = daemon.problems()
    result["stop_s"] = daemon.stop()

    # 3. …and without it (direct mode).
    with disturbed("CLI direct"):
        result["cli_direct"] = cli_runs(daemon, args.cli_runs)
    log(f"cli direct: {json.dumps({k: v for k, v in result['cli_direct'].items() if k != 'imports'})}")

    # 5. Restart over this library.
    with disturbed("restarts"):
        result["restart"] = restarts(daemon, 1, total)

    # 1. Freshness (last: the least sensitive to anything else running on the machine).
    daemon.start()
    daemon.wait_ready()
    wait_indexed(daemon, total, timeout=600)
    with disturbed("freshness"):
        result["fresh"] = freshness(daemon, pics / "d000", args.fresh, total)
    log(f"freshness: {json.dumps(result['fresh']['visible'])}")
    daemon.stop()
    result["problems"] = daemon.problems()
    result["model_ids"] = model_ids(daemon.data)
    return result


def freshness(daemon: Daemon, folder: Path, count: int, library: int) -> dict[str, Any]:
    """New images one at a time: close → visible in /search (polled), with the daemon's milestones."""
    events = Events(daemon.socket)
    rng = np.random.default_rng(SEED + 2)
    letters = np.array(list("bcdfghjklmnpqrstvwxz"))
    rows = []
    siblings = len(list(folder.glob("*.png")))
    try:
        for _ in range(count):
            token = "".join(rng.choice(letters, 10))
            path = folder / f"{token}.png"
            data = png_bytes(rng)
            t_open = time.monotonic()
            with open(path, "wb") as handle:
                handle.write(data)
            closed = time.monotonic()
            polls = 0
            visible = None
            while time.monotonic() - closed < 60:
                status, body = request(daemon.socket, "/search", q=token, k=10)
                polls += 1
                if status == 200 and any(h["path"] == str(path) for h in body["hits"]):
                    visible = time.monotonic()
                    break
                time.sleep(POLL)
            time.sleep(0.3)  # the last events may trail the commit by a moment
            row: dict[str, Any] = {"path": str(path), "write_ms": (closed - t_open) * 1000, "polls": polls,
                                   "visible_ms": (visible - closed) * 1000 if visible else None}
            for t, kind, data_ in events.after(closed):
                if kind == "queued" and "queued_ms" not in row:
                    row["queued_ms"] = (t - closed) * 1000
                elif kind == "stage" and data_.get("stage") == "infer" and data_.get("last") == str(path):
                    row["infer_done_ms"] = (t - closed) * 1000
                elif kind == "stage" and data_.get("stage") == "sidecar" and data_.get("last") == str(path):
                    row["sidecar_done_ms"] = (t - closed) * 1000
                elif kind == "indexed" and data_.get("path") == str(path):
                    row["indexed_ms"] = (t - closed) * 1000
            rows.append(row)
            if visible is None:
                log(f"freshness: {path} not visible after 60 s")
            time.sleep(0.5)
    finally:
        events.close()
    seen = [r["visible_ms"] for r in rows if r["visible_ms"] is not None]
    out: dict[str, Any] = {"count": count, "siblings": siblings, "library": library, "rows": rows,
                           "visible": pct(seen), "missing": count - len(seen),
                           "first_ms": rows[0]["visible_ms"] if rows else None,
                           "visible_after_first": pct(seen[1:])}
    for key in ("queued_ms", "infer_done_ms", "sidecar_done_ms", "indexed_ms"):
        out[key] = pct([r[key] for r in rows if key in r])
        out[key]["missing"] = sum(1 for r in rows if key not in r)
    out["model_only"] = model_time(folder, rows)
    return out


def model_time(folder: Path, rows: list[dict[str, Any]], reps: int = 30) -> dict[str, Any]:
    """What one image costs the workers, measured in a process of its own on the same stand-ins: decode +
    preprocess (`prepare`), inference of a batch of one (`infer`, image tower + tagger), the sidecar write."""
    sample = Path(rows[0]["path"]) if rows else next(folder.glob("*.png"))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--model-time", str(sample),
                           "--reps", str(reps)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def model_time_driver(sample: Path, reps: int) -> dict[str, Any]:
    import tempfile

    from pixdex.indexer.export import STANDIN_CLIP, STANDIN_TAGGER
    from pixdex.indexer.inference import describe, infer, model_spec
    from pixdex.indexer.prepare import DecodeSpec, prepare
    from pixdex.indexer.settings import config_from_dict
    from pixdex.indexer.sidecars.tasks import SidecarSpec, sync_sidecar

    config = config_from_dict({"paths": {"model_dir": str(MODELS)}, "models": {"clip": STANDIN_CLIP,
                                                                               "tagger": STANDIN_TAGGER}},
                              dict(os.environ))
    spec = model_spec(config)
    t0 = time.perf_counter()
    info = describe(spec)
    load = time.perf_counter() - t0
    dspec = DecodeSpec(info.min_side, config.decode.max_pixels, info.transform, info.tagger_size)
    scratch = Path(tempfile.mkdtemp(prefix="pixdex-model-time-"))
    out: dict[str, list[float]] = {"prepare": [], "infer": [], "sidecar": []}
    try:
        for i in range(reps + 3):
            copy = scratch / f"img_{i}.png"
            shutil.copyfile(sample, copy)
            t0 = time.perf_counter()
            prepared = prepare(os.fsencode(copy), dspec)
            t1 = time.perf_counter()
            assert prepared.clip_input is not None
            inferred = infer(spec, prepared.clip_input[None],
                             prepared.tag_input[None] if prepared.tag_input is not None else None)
            t2 = time.perf_counter()
            sync_sidecar(os.fsencode(copy), [str(t["name"]) for t in inferred.tags[0]], [],
                         SidecarSpec(True, "pixdex", "image.ext.xmp", info.clip_id))
            t3 = time.perf_counter()
            if i >= 3:  # warm-up
                for key, value in (("prepare", t1 - t0), ("infer", t2 - t1), ("sidecar", t3 - t2)):
                    out[key].append(value * 1000)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"load_s": load, **{k: float(np.median(v)) for k, v in out.items()}, "reps": reps}


def under_load(daemon: Daemon, memory: Memory, staging: Path, target: Path, queries: list[str],
               expected: int) -> dict[str, Any]:
    """Copy a batch of new images in at once; queries at QUERY_RATE until the event stream has announced
    every one of them indexed (nothing else asks the daemon anything meanwhile); /status confirms after."""
    files = sorted(staging.rglob("*.png"))
    wanted = {str(target / f.name) for f in files}
    copied: dict[str, float] = {}

    def copy() -> None:
        target.mkdir()
        for f in files:
            shutil.copyfile(f, target / f.name)
        copied["at"] = time.monotonic()

    events = Events(daemon.socket)
    memory.start()
    cpu0 = cpu_split(memory.proc)
    t0 = time.monotonic()
    copier = threading.Thread(target=copy)
    copier.start()

    def finished() -> bool:
        with events.lock:
            done = len(wanted.intersection(events.finished))
        return done >= len(wanted) or time.monotonic() - t0 > 1800

    try:
        samples = paced_queries(daemon.socket, queries, until=finished)
    finally:
        copier.join()
        peaks = memory.stop()
        cpu1 = cpu_split(memory.proc)
        events.close()
    ends = [t for path, t in events.finished.items() if path in wanted]
    end = max(ends) if len(ends) == len(wanted) else time.monotonic()
    status = wait_indexed(daemon, expected, timeout=600)
    during = [(t, ms) for t, ms, _ in samples if t < end]
    # Which queries were the first to run after a commit (an `indexed` event arrived since the one before).
    commits = sorted({round(t, 3) for t, kind, _ in events.seen if kind == "indexed"})
    first_after, others = [], []
    previous = t0
    for t, ms in during:
        (first_after if any(previous < c <= t for c in commits) else others).append(ms)
        previous = t
    return {"files": len(files), "copy_s": copied["at"] - t0, "seconds": end - t0,
            "rate": len(files) / (end - t0), "query": pct([ms for _, ms in during]), "rss_peak_mib": peaks,
            "ms": [round(ms, 3) for _, ms in during],
            "missing": len(wanted) - len(ends), "counts": status["counts"],
            "first_after_commit": pct(first_after), "not_after_commit": pct(others),
            "commit_bursts": len({round(c, 1) for c in commits}),
            "cpu_share": {k: (cpu1[k] - cpu0[k]) / (time.monotonic() - t0) for k in cpu0}}


def cpu_split(proc: psutil.Process) -> dict[str, float]:
    """CPU-seconds so far of the daemon process itself, of its worker processes (live and reaped), of this
    script, and of the whole machine (/proc/stat)."""
    import resource

    t = proc.cpu_times()
    me = resource.getrusage(resource.RUSAGE_SELF)
    indexing = 0.0
    for child in indexing_processes(proc):
        try:
            c = child.cpu_times()
            indexing += c.user + c.system
        except psutil.Error:
            pass
    return {"daemon": t.user + t.system, "indexing": indexing, "workers": workers_cpu(proc) - indexing,
            "bench": me.ru_utime + me.ru_stime, "machine": cpu_seconds()}


def indexing_processes(proc: psutil.Process) -> list[psutil.Process]:
    """The daemon's indexing process (`pixdex.daemon.core_process`): its one direct child that is not a
    multiprocessing resource tracker."""
    found = []
    for child in proc.children():
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def idle_unloaded(daemon: Daemon, memory: Memory, timeout: float = 120) -> dict[str, Any]:
    """Wait until /status says no model is loaded (indexing or query side); RSS then."""
    t0 = time.monotonic()
    loaded: Any = None
    while time.monotonic() - t0 < timeout:
        loaded = daemon.status()["loaded_models"]
        if not loaded["indexing"] and not loaded["query"]:
            break
        time.sleep(1.0)
    waited = time.monotonic() - t0
    samples = []
    for _ in range(3):
        time.sleep(1.0)
        samples.append(memory.sample())
    rss = {k: float(np.median([s.get(k, 0.0) for s in samples])) for k in samples[-1]}
    return {"waited_s": waited, "still_loaded": loaded if loaded and (loaded["indexing"] or loaded["query"]) else None,
            "rss_mib": rss}


def cli_runs(daemon: Daemon, runs: int) -> dict[str, Any]:
    """`pixdex search` as a subprocess: wall time and time to its first byte on stdout; importtime once."""
    argv = [str(PIXDEX), "--config", str(daemon.config), "search", CLI_QUERY]
    walls, firsts, lines = [], [], 0
    for i in range(runs + 1):
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        first = proc.stdout.read(1)
        t1 = time.perf_counter()
        rest = proc.stdout.read()
        proc.stderr.read()  # type: ignore[union-attr]
        proc.wait()
        t2 = time.perf_counter()
        if proc.returncode != 0 or not first:
            raise RuntimeError(f"pixdex search exited with {proc.returncode} and printed {first + rest!r}")
        if i:  # the first run warms the page cache
            walls.append((t2 - t0) * 1000)
            firsts.append((t1 - t0) * 1000)
            lines = (first + rest).count(b"\n")
    imports = import_profile([sys.executable, "-X", "importtime", *argv], daemon.env)
    imports["nested"] = nested_imports([sys.executable, "-X", "importtime", *argv], daemon.env)
    return {"runs": runs, "wall": pct(walls), "first_byte": pct(firsts), "lines": lines, "imports": imports}


def nested_imports(argv: list[str], env: dict[str, str], depth: int = 2, top: int = 8) -> list[tuple[str, float]]:
    """The costliest imports down to `depth` levels of nesting (cumulative ms), from `python -X importtime`."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    found = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        level = (len(name) - len(name.lstrip(" ")) - 1) // 2
        if level < depth:
            found.append((name.strip(), int(cumulative) / 1000))
    return sorted(found, key=lambda t: -t[1])[:top]


# 5. Restart --------------------------------------------------------------------------------------------------


def restarts(daemon: Daemon, reps: int, items: int) -> dict[str, Any]:
    """Start → /health answers, → READY=1 (NOTIFY_SOCKET), first query, start-up reconcile done; then SIGTERM."""
    runs = []
    for _ in range(reps):
        notify_path = daemon.root / "notify.sock"
        notify_path.unlink(missing_ok=True)
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(notify_path))
        receiver.settimeout(0.5)
        messages: list[tuple[float, str]] = []
        stop = threading.Event()

        def listen(sock: socket.socket = receiver, got: list[tuple[float, str]] = messages,
                   quit_: threading.Event = stop) -> None:
            while not quit_.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                got.append((time.monotonic(), data.decode(errors="replace")))

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        t0 = time.monotonic()
        daemon.start(notify=notify_path)
        socket_file = None
        while True:
            if socket_file is None and daemon.socket.exists():
                socket_file = time.monotonic()
            if daemon.healthy():
                health = time.monotonic()
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError("the daemon did not answer /health within 600 s")
            time.sleep(0.01)
        deadline = time.monotonic() + 60
        while not any("READY=1" in m for _, m in messages) and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = next((t for t, m in messages if "READY=1" in m), None)
        q0 = time.monotonic()
        _, first_query, hits = timed_query(daemon.socket, CLI_QUERY)
        second = timed_query(daemon.socket, "dog")[1]
        reconciled, last_scan = None, None
        while time.monotonic() - t0 < 900:
            last_scan = daemon.status()["daemon"]["last_scan"]
            if last_scan and last_scan.get("why") == "start":
                reconciled = time.monotonic()
                break
            time.sleep(0.1)
        status = daemon.status()
        stop_s = daemon.stop()
        stop.set()
        receiver.close()
        thread.join(timeout=2)
        runs.append({"socket_file_s": (socket_file - t0) if socket_file else None, "health_s": health - t0,
                     "ready_s": (ready - t0) if ready is not None else None,
                     "first_query_ms": first_query, "first_query_hits": hits, "second_query_ms": second,
                     "first_query_after_s": q0 - t0,
                     "reconciled_s": (reconciled - t0) if reconciled else None, "last_scan": last_scan,
                     "counts": status["counts"], "queue": status["queue"], "stop_s": stop_s,
                     "notify": [m.split("\n")[0] for _, m in messages][:8]})
        log(f"restart: {json.dumps(runs[-1])}")
    return {"items": items, "runs": runs}


def model_ids(data: Path) -> dict[str, Any]:
    """The model ids and dimension the daemon stamped on what it indexed (the synthetic catalog needs them)."""
    from pixdex.indexer.catalog import Catalog

    catalog = Catalog(data / "catalog.sqlite3", read_only=True)
    try:
        clip, tagger, blob = catalog.db.execute(
            "SELECT i.clip_model, i.tagger_model, e.vector FROM images i JOIN embeddings e ON e.image_id = i.id "
            "WHERE i.state = 'done' LIMIT 1").fetchone()
    finally:
        catalog.close()
    return {"clip": clip, "tagger": tagger, "dim": len(blob) // 4}


class DaemonLibrary(Library):
    """core_bench's synthetic library (real `Writer`; Zipf tags and captions, random unit vectors), stamped
    with the daemon's model ids, over files that exist: each row carries its file's real stat."""

    def __init__(self, root: Path, ids: tuple[str, str | None], ndim: int, index_settings: Any) -> None:
        self.ids = ids
        super().__init__(root, ids[0], ndim, index_settings)

    def open(self, index_settings: Any) -> float:
        from pixdex.indexer.catalog import Catalog
        from pixdex.indexer.fulltext import FullText
        from pixdex.indexer.sections import PipelineSettings
        from pixdex.indexer.vectors import VectorIndex
        from pixdex.indexer.writer import Writer

        t0 = time.perf_counter()
        self.catalog = Catalog(self.layout.catalog)
        vectors = VectorIndex(self.layout, self.model_id, self.ndim, index_settings)
        self.writer = Writer(self.catalog, FullText(self.layout), vectors, PipelineSettings(), self.ids)
        return time.perf_counter() - t0

    def register(self, batch: list[dict[str, Any]]) -> list[tuple[int, int]]:
        from pixdex.indexer.catalog.rows import FileStat

        self.writer.register([FileStat(b["path"], b["dev"], b["ino"], b["size"], b["mtime_ns"]) for b in batch],
                             [], [], [], [])
        self.writer.flush()
        found = {bytes(p): (int(i), int(s)) for i, p, s in self.lookup.db.execute(
            "SELECT i.id, i.path, q.seq FROM images i JOIN queue q ON q.image_id = i.id")}
        return [found[b["path"]] for b in batch]

    def indexed(self, keys: list[tuple[int, int]], batch: list[dict[str, Any]], vectors: np.ndarray) -> list[Any]:
        from pixdex.indexer.catalog.rows import FileStat
        from pixdex.indexer.writer.commands import Indexed

        return [Indexed(image_id=i, seq=s, stat=FileStat(b["path"], b["dev"], b["ino"], b["size"], b["mtime_ns"]),
                        digest=b["digest"], width=16, height=12, taken=b["taken"], camera=b["camera"],
                        tags=b["tags"], embedding=v, embedded={"description": b["metadata"]})
                for (i, s), b, v in zip(keys, batch, vectors, strict=False)]


def build_big(root: Path, items: int, ids: dict[str, Any]) -> dict[str, Any]:
    """`items` identical tiny PNGs on disk (1,000 per folder) and a catalog holding every one of them."""
    from pixdex.indexer.sections import IndexSettings

    pics = root / "pics"
    data = root / "data" / "pixdex"
    shutil.rmtree(root, ignore_errors=True)
    blob = png_bytes(np.random.default_rng(SEED + 3))
    t0 = time.perf_counter()
    stats = []
    for i in range(items):
        sub = pics / f"d{i // PER_DIR:03d}"
        if i % PER_DIR == 0:
            sub.mkdir(parents=True)
        path = os.fsencode(sub / f"IMG_{i:07d}.png")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, blob)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        stats.append((path, st))
    files_s = time.perf_counter() - t0
    log(f"big: {items} files in {files_s:.1f} s")
    t0 = time.perf_counter()
    lib = DaemonLibrary(data, (ids["clip"], ids["tagger"]), ids["dim"], IndexSettings())
    chunk = 20_000
    for start in range(0, items, chunk):
        batch, vectors = synth_batch(SEED, start, min(chunk, items - start), ids["dim"], lib.vocab)
        for b, (path, st) in zip(batch, stats[start:start + chunk], strict=False):
            b.update(path=path, dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns)
        keys = lib.register(batch)
        lib.store(lib.indexed(keys, batch, vectors))
    lib.close()
    lib.lookup.close()
    catalog_s = time.perf_counter() - t0
    log(f"big: catalog of {items} in {catalog_s:.1f} s")
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    return {"items": items, "files_s": files_s, "catalog_s": catalog_s, "data_mib": size / 2**20, "pics": pics}


def big_part(args: argparse.Namespace, ids: dict[str, Any]) -> dict[str, Any]:
    root = WORK / "big"
    built = build_big(root, args.big, ids)
    daemon = Daemon(root, [built.pop("pics")])
    with disturbed("restarts"):
        out = {"build": built, **restarts(daemon, args.restarts, args.big)}
    out["problems"] = daemon.problems()
    return out


# The report ------------------------------------------------------------------------------------------------


def machine() -> str:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2**20
    return (f"{nproc} cores (`nproc`), {cpu} (/proc/cpuinfo model name), {mem:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()}")


def revision() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = [line[3:] for line in subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "daemon", "indexer", "query"],
        capture_output=True, text=True).stdout.splitlines()]
    return f"commit {head}" + (f" plus uncommitted changes to {', '.join(dirty)}" if dirty else "")


def f0(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def f1(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def f2(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def med(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return float(np.median(values)) if values else None


def report(r: dict[str, Any]) -> str:
    live, big = r["live"], r["big"]
    fresh, loads, idle = live["fresh"], live["loads"], live["query_idle"]
    pooled = pct([ms for load in loads for ms in load["ms"]])
    ratio = pooled["p99"] / idle["p99"]
    rounds = " / ".join(f"{load['query']['p99'] / idle['p99']:.1f}×" for load in loads)
    batch = loads[0]["files"]
    cd, cx = live["cli_daemon"], live["cli_direct"]
    small_runs, big_runs = live["restart"]["runs"], big["runs"]
    rss_index = live["index"]["rss_peak_mib"]
    rss_load = {k: max(load["rss_peak_mib"].get(k, 0.0) for load in loads) for k in loads[0]["rss_peak_mib"]}
    rss_loaded, rss_unloaded = live["rss_idle_loaded_mib"], live["unload"]["rss_mib"]
    m = fresh["model_only"]
    lines = [
        "## The daemon end to end: freshness, query latency while indexing, CLI start-up, memory, restart",
        "",
        f"- Machine: {machine()}",
        f"- Command: `{r['command']}` ({r['wall_s'] / 60:.1f} min wall, {r['date']}); {r['rev']}. Other processes "
        "used " + ", ".join(f"{sec:.0f}" for sec in r["disturbed"].values()) + " CPU-seconds during the "
        + ", ".join(r["disturbed"]) + " parts (/proc/stat minus this script, its daemons and their workers; "
        "0 = undisturbed).",
        "- The real `pixdex serve` as a subprocess on temporary XDG folders, stand-in models (CLIP with 32-d "
        "vectors and a 64 px image tower, tagger at 64 px; meaningless results, the real code paths), the config's "
        "defaults except `[models] idle_ttl = 5` and `[search] related_tags = 1` (off: the stand-in relates random "
        "words to random tags) (so `watch.debounce` 0.3 s, `pipeline.batch_wait` 0.2 s, "
        "`pipeline.commit_seconds` 0.5 s, `models.batch_size` 16, 2 decode workers and the model worker at nice +10 "
        "in the SCHED_IDLE class, sidecars written). "
        "Requests go over the Unix socket, a new connection each, as `pixdex search` makes them; this script runs "
        "on the same 2 cores.",
        f"- Library for parts 1–4: {live['library']:,} tiny PNGs (16×12, random pixels, {PER_DIR:,} per folder) "
        f"that the daemon indexed itself after its first start: {live['index']['seconds']:.0f} s, "
        f"{live['index']['rate']:.1f} images/s (generating them took {live['generate_s']:.0f} s, not counted).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| 1. file closed → visible in `/search`, p50 / p99 (ms), {fresh['count']} new files | "
        f"{f0(fresh['visible'].get('p50'))} / {f0(fresh['visible'].get('p99'))} |",
        f"| 2. `GET /search` k=20, idle, p50 / p99 (ms) | {f1(idle['p50'])} / {f1(idle['p99'])} |",
        f"| 2. `GET /search` k=20, while indexing {batch:,} new images ({len(loads)}×), p50 / p99 (ms) | "
        f"{f1(pooled['p50'])} / {f1(pooled['p99'])} |",
        f"| 2. p99 while indexing / p99 idle (goal ≤ 2) | **{ratio:.1f}×**"
        + (f" (rounds: {rounds})" if len(loads) > 1 else "") + " |",
        f"| 3. `pixdex search` with the daemon: wall / first byte of output, median (ms) | "
        f"{f0(cd['wall']['p50'])} / {f0(cd['first_byte']['p50'])} |",
        f"| 3. `pixdex search` without a daemon (direct): wall / first byte, median (ms) | "
        f"{f0(cx['wall']['p50'])} / {f0(cx['first_byte']['p50'])} |",
        f"| 4. RSS idle after the models unloaded: serving / indexing / model worker / all processes (MiB) | "
        f"{f0(rss_unloaded['daemon'])} / {f0(rss_unloaded.get('indexing process'))} / "
        f"{f0(rss_unloaded.get('model worker'))} / {f0(rss_unloaded['total'])} |",
        f"| 4. RSS peak while indexing {batch:,} new images: serving / indexing / model worker / all (MiB) | "
        f"{f0(rss_load['daemon'])} / {f0(rss_load.get('indexing process'))} / {f0(rss_load.get('model worker'))} / "
        f"{f0(rss_load['total'])} |",
        f"| 5. restart with {big['items']:,} items: start → `/health` answers / READY=1, median (s) | "
        f"{f2(med(big_runs, 'health_s'))} / {f2(med(big_runs, 'ready_s'))} |",
        f"| 5. restart with {big['items']:,} items: start → start-up reconcile done, median (s) | "
        f"{f1(med(big_runs, 'reconciled_s'))} |",
        "",
        "### 1. Freshness",
        "",
        f"{fresh['count']} new PNGs written one at a time into a watched folder that already held "
        f"{fresh['siblings']:,} indexed images (of {fresh['library']:,}); each after the previous one was visible, "
        f"0.5 s apart. Clock starts when the file is closed; a file is visible at the first "
        f"`GET /search?q=<its unique name word>&k=10` answer that lists it (polled every {POLL * 1000:.0f} ms, "
        "so the figure includes up to one poll interval and one query). The milestones are when this script "
        "received the daemon's events for the same file on `GET /events`. Nothing is subtracted.",
        "",
        "| from file closed to … (ms) | p50 | p90 | p99 | max | events missing |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("queued_ms", "scan queued it (`queued` event)"),
                       ("infer_done_ms", "models done (`stage` infer)"),
                       ("sidecar_done_ms", "sidecar written (`stage` sidecar)"),
                       ("indexed_ms", "commit announced (`indexed` event)")):
        s = fresh[key]
        lines.append(f"| {label} | {f0(s.get('p50'))} | {f0(s.get('p90'))} | {f0(s.get('p99'))} | "
                     f"{f0(s.get('max'))} | {s['missing']} |")
    v = fresh["visible"]
    lines += [
        f"| **visible in `/search`** | **{f0(v.get('p50'))}** | {f0(v.get('p90'))} | **{f0(v.get('p99'))}** | "
        f"{f0(v.get('max'))} | {fresh['missing']} not visible |",
        "",
        "Measured last, on the same library after the restart of part 5 (the daemon started again, nothing "
        f"queued). The first file took {f0(fresh['first_ms'])} ms; "
        f"without it p50 / p99 are {f0(fresh['visible_after_first'].get('p50'))} / "
        f"{f0(fresh['visible_after_first'].get('p99'))} ms.",
    ]
    steps = [fresh[k].get("p50") for k in ("queued_ms", "infer_done_ms", "sidecar_done_ms", "indexed_ms")]
    if None not in steps:
        lines.append(
            f"Between the p50 milestones: {steps[0]:.0f} ms until the scan queued the file (the watcher's debounce "
            f"and the folder's rescan), {steps[1] - steps[0]:.0f} ms to decode, batch and run the models, "
            f"{steps[2] - steps[1]:.0f} ms for the sidecar, {steps[3] - steps[2]:.0f} ms until the commit was "
            f"announced, {v['p50'] - steps[3]:.0f} ms until the poll saw it.")
    if "error" in m:
        lines.append(f"The model-time measurement failed: {m['error'][:300]}")
    else:
        lines.append(
            f"What the work itself costs, measured apart in a process of its own on the same stand-ins (median of "
            f"{m['reps']}, idle machine, nice 0): decode + preprocess {m['prepare']:.1f} ms, inference of a batch of "
            f"one (image tower + tagger) {m['infer']:.1f} ms, sidecar write {m['sidecar']:.1f} ms — about "
            f"{m['prepare'] + m['infer'] + m['sidecar']:.0f} ms of the p50; the rest is the waits the settings ask "
            "for (debounce 0.3 s, partial batch 0.2 s, commit grouping up to 0.5 s) and hand-offs between threads "
            "and processes.")
    lines += [
        "",
        "### 2. Query latency on the socket, idle and while indexing",
        "",
        f"Text queries of 1–3 words (mostly the stand-in tagger's tags), k=20, at {QUERY_RATE:.0f} queries/s "
        f"(wall time on this side: connect, request, JSON answer). Idle: {idle['n']} queries after 10 warm-up "
        f"ones (query text tower loaded). While indexing: {batch:,} new PNGs copied at once into a new watched "
        f"subfolder, {len(loads)} time(s) one after the other; queries from the copy's start until `GET /events` "
        "had announced every one of them indexed (nothing else asked the daemon anything meanwhile). A query "
        "\"after a commit\" is the first one to start after an `indexed` event arrived: it is the one that "
        "reloads the text index and catches the vector view up.",
        "",
        "| | images/s | queries | p50 | p90 | p99 | max | p99 / idle p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| idle | – | {idle['n']} | {f1(idle['p50'])} | {f1(idle['p90'])} | {f1(idle['p99'])} | {f1(idle['max'])} "
        "| 1.0× |",
    ]
    for n, load in enumerate(loads, 1):
        q, a, b = load["query"], load["first_after_commit"], load["not_after_commit"]
        lines.append(f"| while indexing, round {n} ({load['seconds']:.0f} s) | {load['rate']:.1f} | {q['n']} "
                     f"| {f1(q['p50'])} | {f1(q['p90'])} | {f1(q['p99'])} | {f1(q['max'])} "
                     f"| **{q['p99'] / idle['p99']:.1f}×** |")
        lines.append(f"| … of them the first after a commit | | {a['n']} | {f1(a.get('p50'))} | {f1(a.get('p90'))} "
                     f"| {f1(a.get('p99'))} | {f1(a.get('max'))} | {a['p99'] / idle['p99'] if a['n'] else 0:.1f}× |")
        lines.append(f"| … the others | | {b['n']} | {f1(b.get('p50'))} | {f1(b.get('p90'))} "
                     f"| {f1(b.get('p99'))} | {f1(b.get('max'))} | {b['p99'] / idle['p99'] if b['n'] else 0:.1f}× |")
    lines += [
        f"| while indexing, all rounds | | {pooled['n']} | {f1(pooled['p50'])} | {f1(pooled['p90'])} "
        f"| {f1(pooled['p99'])} | {f1(pooled['max'])} | **{ratio:.1f}×** |",
        "",
        "(milliseconds.) CPU while indexing, in cores (of 2), round by round: the serving process (event loop, "
        "query threads, the query text tower; nice 0) "
        + " / ".join(f"{x['cpu_share']['daemon']:.2f}" for x in loads) + "; its indexing process (watcher, scanner, "
        "pipeline threads, writer; nice +10) "
        + " / ".join(f"{x['cpu_share'].get('indexing', 0.0):.2f}" for x in loads) + "; the worker processes (nice +10) "
        + " / ".join(f"{x['cpu_share']['workers']:.2f}" for x in loads) + "; this script "
        + " / ".join(f"{x['cpu_share']['bench']:.2f}" for x in loads) + "; the whole machine "
        + " / ".join(f"{x['cpu_share']['machine']:.2f}" for x in loads) + ".",
        "",
        "### 3. `pixdex search` start-up",
        "",
        f"`.venv/bin/pixdex search \"{CLI_QUERY}\"` as a subprocess over the same library; {cd['runs']} runs after one "
        "warm-up each; first byte = the first byte read from its stdout pipe. With the daemon: it answers over the "
        "socket. Direct: after the daemon stopped, the command opens the indexes and loads the text tower itself.",
        "",
        "| | wall p50 | wall min–max | first byte p50 | first byte min–max | `-X importtime` total | modules |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, c in (("with the daemon", cd), ("direct (no daemon)", cx)):
        lines.append(f"| {label} | {f0(c['wall']['p50'])} | {f0(c['wall']['min'])}–{f0(c['wall']['max'])} | "
                     f"{f0(c['first_byte']['p50'])} | {f0(c['first_byte']['min'])}–{f0(c['first_byte']['max'])} | "
                     f"{f0(c['imports']['total_ms'])} | {c['imports']['modules']} |")
    lines += [
        "",
        "(milliseconds.) Heavy modules imported — with the daemon: "
        + (", ".join(cd["imports"]["heavy"]) or "none") + "; direct: " + (", ".join(cx["imports"]["heavy"]) or "none")
        + ". Largest imports with the daemon, two levels deep (cumulative ms): "
        + ", ".join(f"{n} {ms:.0f}" for n, ms in cd["imports"]["nested"]) + ".",
        "",
        "### 4. Memory (RSS, MiB)",
        "",
        "psutil, the serving process (`pixdex serve` itself) and each process below it by role (the indexing "
        "process is its direct child; the model worker is the one with onnxruntime mapped; the decode workers are "
        "summed). Peaks are the highest of samples every 0.25 s; "
        "the total is the peak of the sum. \"File-backed\" is the serving process's resident mapped files and "
        "libraries "
        "(psutil's `shared`). The stand-in models are tiny: the model worker's figures are not what real models "
        "take (see the core section's model memory table for a real-size CLIP).",
        "",
        "| state | serving | of it file-backed | indexing | model worker | decode workers (sum) | resource tracker "
        "| all |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in ((f"peak while indexing the first {live['library']:,}", rss_index),
                     ("idle, models loaded (after the warm-up queries)", rss_loaded),
                     (f"peak while indexing {batch:,} more and answering queries", rss_load),
                     ("idle after `idle_ttl` unloaded the models", rss_unloaded)):
        lines.append(f"| {label} | {f0(s.get('daemon'))} | {f0(s.get('daemon file-backed'))} | "
                     f"{f0(s.get('indexing process'))} | {f0(s.get('model worker'))} | "
                     f"{f0(s.get('decode worker'))} | {f0(s.get('resource tracker'))} | {f0(s.get('total'))} |")
    un = live["unload"]
    drop = rss_loaded["daemon"] - rss_unloaded["daemon"]
    lines += [
        "",
        f"/status listed no loaded model {un['waited_s']:.0f} s after the indexing ended"
        + (f" — **models still loaded after the wait: {un['still_loaded']}**" if un["still_loaded"] else "")
        + f". The serving process shrank by {drop:.0f} MiB at the unload; the only model it holds is the "
        f"stand-in text tower ({r.get('textual_mib', 13):.0f} MB of ONNX), and `ModelCache`'s unload also runs "
        "`gc.collect()` and `malloc_trim(0)`, which hand back heap the queries had left behind.",
        "",
        "### 5. Restart to READY",
        "",
        "`pixdex serve` started with NOTIFY_SOCKET naming a datagram socket this script bound; times from the "
        "`Popen` call. `/health` polled every 10 ms on a new connection; READY=1 when its datagram arrived; the "
        "first and second `GET /search` right after; the start-up reconcile (it walks every watched folder) is "
        "done when `/status` shows its `last_scan`; stop = SIGTERM → exit.",
        "",
        f"The {big['items']:,}-item catalog: {big['items']:,} identical tiny PNGs written to disk "
        f"({PER_DIR:,} per folder, {big['build']['files_s']:.0f} s) and one catalog row each through core_bench's "
        f"synthetic `Library` — the real `Writer`, Zipf tags and captions, random unit {live['model_ids']['dim']}-d "
        "vectors — stamped with the daemon's model ids and each file's real stat, so the reconcile finds them "
        f"unchanged ({big['build']['catalog_s']:.0f} s; data directory {big['build']['data_mib']:.0f} MiB).",
        "",
        "| catalog | runs | socket file | `/health` answers | READY=1 | first query (ms) | second query (ms) "
        "| reconcile done | queued by it | stop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, runs in ((f"{live['restart']['items']:,} (indexed by the daemon)", small_runs),
                        (f"{big['items']:,} (synthetic)", big_runs)):
        queued = sorted({(x["last_scan"] or {}).get("queued") for x in runs}, key=str)
        lines.append(f"| {label} | {len(runs)} | {f2(med(runs, 'socket_file_s'))} | {f2(med(runs, 'health_s'))} | "
                     f"{f2(med(runs, 'ready_s'))} | {f0(med(runs, 'first_query_ms'))} | "
                     f"{f0(med(runs, 'second_query_ms'))} | {f1(med(runs, 'reconciled_s'))} | "
                     f"{', '.join(str(q) for q in queued)} | {f1(med(runs, 'stop_s'))} |")
    lines += [
        "",
        "(seconds unless marked; medians.) Per run, start → READY=1 (s): "
        + ", ".join(f2(x["ready_s"]) for x in big_runs) + f" at {big['items']:,} items.",
    ]
    problems = live["problems"] + big["problems"]
    if problems:
        kinds: dict[str, int] = {}
        for record in problems:
            first, *rest = record.splitlines()
            key = first.split(" ", 1)[1][:120] + (f" … {rest[-1].strip()[:160]}" if rest else "")
            kinds[key] = kinds.get(key, 0) + 1
        lines += ["", f"The daemons logged {len(problems)} record(s) at WARNING or above (logs: "
                  "bench/out/daemon_bench_live.log, bench/out/daemon_bench_big.log):", ""]
        lines += [f"- {n}× `{k.replace('`', chr(39))}`" for k, n in kinds.items()]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (about 3 minutes)")
    parser.add_argument("--library", type=int, help="images the daemon indexes first (10,000; quick 2,000)")
    parser.add_argument("--fresh", type=int, help="new files for the freshness figure (100; quick 30)")
    parser.add_argument("--batch", type=int, help="images copied in while querying (3,000; quick 1,000)")
    parser.add_argument("--load-rounds", type=int, help="batches copied in, one after the other (2; quick 1)")
    parser.add_argument("--queries", type=int, help="idle queries (600; quick 200)")
    parser.add_argument("--cli-runs", type=int, help="pixdex search runs per mode (20; quick 10)")
    parser.add_argument("--big", type=int, help="items of the restart catalog (100,000; quick 20,000)")
    parser.add_argument("--restarts", type=int, help="restarts over it (3; quick 2)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    parser.add_argument("--from-json", type=Path, help="only write the page again from bench/out/daemon_bench.json")
    parser.add_argument("--model-time", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=30, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_time:
        print(json.dumps(model_time_driver(args.model_time, args.reps)))
        return
    if args.from_json:
        text = report(json.loads(args.from_json.read_text()))
        replace_section(args.out, "daemon_bench", text)
        print(text)
        return
    defaults = {"library": (10_000, 2_000), "fresh": (100, 30), "batch": (3_000, 1_000), "load_rounds": (2, 1),
                "queries": (600, 200),
                "cli_runs": (20, 10), "big": (100_000, 20_000), "restarts": (3, 2)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    started = time.perf_counter()
    rev_start = revision()
    from pixdex.indexer import export

    if not (MODELS / "clip" / export.STANDIN_CLIP / "visual" / "model.onnx").exists():
        export.write_standin_clip(MODELS)
    if not (MODELS / "tagger" / export.STANDIN_TAGGER / "model.onnx").exists():
        export.write_standin_tagger(MODELS)
    atexit.register(stop_running)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # atexit runs: the daemons are stopped
    stop_leftovers()
    WORK.mkdir(parents=True, exist_ok=True)
    live = live_part(args)
    big = big_part(args, live["model_ids"])
    command = ".venv/bin/python bench/daemon_bench.py" + (" --quick" if args.quick else "")
    given = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, (full, quick) in defaults.items()
             if getattr(args, k) != (quick if args.quick else full)]
    if given:
        command += " " + " ".join(given)
    rev_end = revision()
    rev = rev_start if rev_start == rev_end else f"{rev_start} at the start, {rev_end} at the end (pixdex is " \
        "installed editable: the daemons ran the working tree as it was when each started)"
    textual = MODELS / "clip" / export.STANDIN_CLIP / "textual" / "model.onnx"
    results = {"live": live, "big": big, "command": command, "rev": rev, "disturbed": DISTURBED,
               "textual_mib": textual.stat().st_size / 1e6, "date": time.strftime("%Y-%m-%d"),
               "wall_s": time.perf_counter() - started, "args": vars(args) | {"out": str(args.out)}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "daemon_bench.json").write_text(json.dumps(results, indent=1, default=str))
    text = report(results)
    replace_section(args.out, "daemon_bench", text)
    print(text)
    for part in ("live", "big"):  # the daemons' logs stay beside the JSON
        shutil.copyfile(WORK / part / "serve.log", OUT / f"daemon_bench_{part}.log")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
