"""The indexing core in a process of its own, so the serving process only reads and answers.

`pixdex serve` is two processes. The serving process (the parent) holds the event loop, the HTTP
sites, the query threads and the event bus; the indexing process (this module's `core_main`, a
spawned child) holds `runtime.Daemon` — the watcher, the scanner thread, the pipeline's threads,
the writer and the worker pools. Queries never wait for the GIL behind the pipeline's Python work,
and the indexing process runs at the workers' niceness (`pipeline.nice`), so the kernel runs a
query first when both want a core.

They talk over one `multiprocessing` pipe. The parent sends `(id, method, args)`; the child answers
each call on a thread of its own with `("reply", id, ok, value)` and pushes `("event", kind, data)`
(the bus's events), `("collections", list)` (whenever the watched folders change, before the
reply of the call that changed them) and, once, `("opened", error, collections)`.

The child dies with the parent (PR_SET_PDEATHSIG), so a `kill -9` of `pixdex serve` leaves no
indexing process holding the data directory's lock. When the child dies on its own, the parent
logs its exit code and starts another; calls meanwhile get `Unavailable` (HTTP 503).
"""

from __future__ import annotations

import ctypes
import faulthandler
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from typing import Any

from pixdex.daemon.events import EventBus
from pixdex.daemon.runtime import MODEL_FIX, Unavailable
from pixdex.indexer.collections import Collection
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)
SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # the serving process's to handle
STATE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 120.0


class CoreProcess:
    """The serving process's handle on the indexing process: `Daemon`'s questions, asked over the pipe."""

    def __init__(self, config: Config, bus: EventBus) -> None:
        self.config = config
        self.bus = bus
        self.started = time.time()
        self.collections: list[Collection] = []  # pushed by the child; read per request, so kept here
        self.restarts = 0
        self._conn: Connection | None = None
        self._proc: Any = None
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()  # guards _pending and sends
        self._ids = itertools.count(1)
        self._opened: Future[None] = Future()
        self._exited = threading.Event()  # set by the reader thread, the only one that joins the child
        self._closing = False
        self._loop: Any = None

    @property
    def model_fix(self) -> str:
        return MODEL_FIX.format(dir=self.config.model_dir, clip=self.config.models.clip)

    # Lifecycle --------------------------------------------------------------------------------
    def start(self, loop: Any = None) -> Future[None]:
        """Spawn the indexing process; the future resolves once it has opened the core (or raises why not).

        Call it from the thread that lives as long as the process (the event loop's): the child's
        PR_SET_PDEATHSIG fires when the thread that started it ends."""
        self._loop = loop or self._loop
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        self._opened = Future()
        self._exited = threading.Event()
        # Signals blocked while spawning, so a Ctrl-C during the child's start-up is not its to take.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            proc = context.Process(target=core_main, name="pixdex-core",
                                   args=(self.config, theirs, logging.getLogger().level, os.getpid()))
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        theirs.close()
        self._proc, self._conn = proc, mine
        threading.Thread(target=self._read, args=(mine, proc, self._opened, self._exited), name="pixdex-core-reader",
                         daemon=True).start()
        return self._opened

    def close(self) -> None:
        """Ask the indexing process to stop: it commits what is finished, saves the vector index, exits."""
        self._closing = True
        if self._proc is None:
            return
        try:
            self.call("close").result(timeout=CLOSE_TIMEOUT)
        except Unavailable:
            pass  # already gone
        except Exception as exc:  # noqa: BLE001 - stopping anyway
            log.warning("the indexing process did not close cleanly: %s", exc)
        if not self._exited.wait(30):
            log.error("the indexing process (pid %d) did not exit; killing it", self._proc.pid)
            self._proc.kill()
            self._exited.wait(10)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # Calls ------------------------------------------------------------------------------------
    def call(self, method: str, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            conn = self._conn
            if conn is None:
                future.set_exception(Unavailable("the indexing process is starting again; try again in a moment"))
                return future
            call_id = next(self._ids)
            self._pending[call_id] = future
            try:
                conn.send((call_id, method, args))
            except (OSError, ValueError):
                self._pending.pop(call_id, None)
                future.set_exception(Unavailable("the indexing process is starting again; try again in a moment"))
        return future

    def state(self, queued: int = 0, workers: bool = False) -> dict[str, Any]:
        """What the indexing process is doing now (see `CoreHost.do_state`)."""
        try:
            value: dict[str, Any] = self.call("state", queued, workers).result(timeout=STATE_TIMEOUT)
        except FutureTimeout:
            raise Unavailable("the indexing process did not answer within 10 s; try again in a moment") from None
        return value

    def submit(self, kind: str, *args: Any) -> Future[Any]:
        """A scanner job (reconcile, scan, reindex, reload, watch-add, watch-remove); resolves with its result."""
        return self.call("submit", kind, *args)

    def pause(self, paused: bool) -> None:
        self.call("pause", paused).result()

    def edit_item(self, image_id: int, add: list[str], remove: list[str], description: str | None) -> None:
        self.call("edit_item", image_id, add, remove, description).result()

    # The reader thread ------------------------------------------------------------------------
    def _read(self, conn: Connection, proc: Any, opened: Future[None], exited: threading.Event) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._handle(message, opened)
            except Exception:  # noqa: BLE001 - one bad message must not cut the serving process off
                log.exception("a message from the indexing process could not be handled: %.200r", message)
        self._ended(conn, proc, opened, exited)

    def _handle(self, message: tuple[Any, ...], opened: Future[None]) -> None:
        kind = message[0]
        if kind == "reply":
            _, call_id, ok, value = message
            with self._lock:
                future = self._pending.pop(call_id, None)
            if future is not None:
                (future.set_result if ok else future.set_exception)(value)
        elif kind == "event":
            self.bus.publish(message[1], **message[2])
        elif kind == "collections":
            self.collections = message[1]
        elif kind == "opened":
            _, error, collections = message
            self.collections = collections
            (opened.set_exception(error) if error is not None else opened.set_result(None))

    def _ended(self, conn: Connection, proc: Any, opened: Future[None], exited: threading.Event) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(Unavailable("the indexing process stopped; try again in a moment"))
        proc.join(timeout=30)  # the pipe ends when it exits: this is short
        if not proc.is_alive():
            exited.set()
        conn.close()
        if not opened.done():
            opened.set_exception(PixdexError(f"the indexing process exited (code {proc.exitcode}) before it "
                                             "opened the indexes; the log above says why"))
        elif opened.exception() is None and not self._closing:
            self.restarts += 1
            wait = min(30.0, 2.0 ** min(self.restarts, 5))
            log.error("the indexing process died (exit code %s); starting another in %.0f s", proc.exitcode, wait)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.call_later, wait, self._restart)

    def _restart(self) -> None:
        if self._closing:
            return
        opened = self.start()
        opened.add_done_callback(lambda f: log.info("the indexing process is back") if f.exception() is None
                                 else log.error("the indexing process could not start again: %s", f.exception()))


# The child --------------------------------------------------------------------------------------
def core_main(config: Config, conn: Connection, level: int, parent: int) -> None:
    """The indexing process: dies with its parent, leaves signals to it, runs at the workers' niceness."""
    _die_with_parent(parent)
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent passes its SIGUSR1 on: stacks to the log
    from pixdex.daemon.logs import setup_logging

    setup_logging(1 if level <= logging.DEBUG else 0)
    if config.pipeline.nice:
        os.nice(config.pipeline.nice)  # the workers it starts stay at this level (workers.lower_priority)
    CoreHost(config, conn, parent).run()
    logging.shutdown()
    os._exit(0)  # call threads may still wait on jobs the closed core will never run


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipe's EOF still ends the child
        pass
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)


class PipeBus:
    """`EventBus.publish` for the child: each event goes up the pipe to the parent's bus."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self.send = send

    def publish(self, kind: str, **data: Any) -> None:
        self.send(("event", kind, data))


class CoreHost:
    """The child's side: one `Daemon`, answering the parent's calls on threads."""

    def __init__(self, config: Config, conn: Connection, holder: int) -> None:
        from pixdex.daemon.runtime import Daemon

        self.conn = conn
        self._send_lock = threading.Lock()
        self.daemon = Daemon(config, PipeBus(self.send), holder)  # type: ignore[arg-type]
        self.daemon.on_collections = lambda collections: self.send(("collections", collections))

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                pass  # the parent is gone, and PR_SET_PDEATHSIG ends this process

    def run(self) -> None:
        try:
            self.daemon.open()
        except BaseException as exc:  # noqa: BLE001 - the parent raises it
            self.send(("opened", portable(exc), []))
            return
        self.send(("opened", None, self.daemon.collections))
        calls = ThreadPoolExecutor(8, thread_name_prefix="pixdex-call")
        close_id = None
        while True:
            try:
                call_id, method, args = self.conn.recv()
            except (EOFError, OSError):
                break
            if method == "close":
                close_id = call_id
                break
            calls.submit(self.answer, call_id, method, args)
        calls.shutdown(wait=False, cancel_futures=True)
        try:
            self.daemon.close()
        finally:
            if close_id is not None:
                self.send(("reply", close_id, True, None))

    def answer(self, call_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            reply: tuple[Any, ...] = ("reply", call_id, True, getattr(self, f"do_{method}")(*args))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply = ("reply", call_id, False, portable(exc))
        try:
            pickle.dumps(reply[3])
        except Exception as exc:  # noqa: BLE001
            reply = ("reply", call_id, False, PixdexError(f"{method}: an answer that cannot be sent ({exc})"))
        self.send(reply)

    # Calls ------------------------------------------------------------------------------------
    def do_state(self, queued: int, workers: bool) -> dict[str, Any]:
        """For /health, /status, /metrics and the STATUS lines: mode, progress, watchers, memory."""
        import psutil

        daemon, indexer = self.daemon, self.daemon.indexer
        reduced = indexer is None or not indexer.info.has_models
        state: dict[str, Any] = {
            "ok": indexer is not None, "pid": os.getpid(), "paused": daemon.paused,
            "mode": "reduced" if reduced else "full",
            "missing": indexer.info.missing if indexer is not None and reduced else "",
            "busy": bool(daemon.scanning) or (indexer is not None and not indexer.pipeline.idle()),
            "last_scan": daemon.last_scan, "progress": daemon.progress(queued), "pull": daemon.pull,
            "describe": indexer.describer.status() if indexer is not None and indexer.describer is not None
            else {"enabled": False},
            "watch": {root.path: root.as_dict() for root in daemon.watcher.roots.values()},
            "rss": psutil.Process().memory_info().rss,
        }
        if workers:
            state["workers"] = _worker_state(daemon)
        return state

    def do_submit(self, kind: str, *args: Any) -> Any:
        return self.daemon.submit(kind, *args).result()

    def do_pause(self, paused: bool) -> None:
        self.daemon.pause(paused)

    def do_edit_item(self, image_id: int, add: list[str], remove: list[str], description: str | None) -> None:
        self.daemon.edit_item(image_id, add, remove, description)

    def do_embed_upload(self, data: bytes, name: str, model: tuple[str, Any] | None = None) -> Any:
        """An uploaded query image: decoded in a decode worker, embedded in the model worker — by `model`
        (folder, transform: the one searches use, which is not the indexing one while a new model re-embeds)."""
        import dataclasses
        from pathlib import Path

        from pixdex.indexer.errors import ModelError
        from pixdex.indexer.inference import infer
        from pixdex.indexer.prepare import DecodeSpec, prepare_query_image

        indexer = self.daemon.indexer
        if indexer is None or not indexer.info.has_models:
            raise ModelError("searching by image needs the CLIP model, and pixdex runs without models (reduced mode)")
        transform, spec = indexer.info.transform, indexer.spec
        if model is not None and Path(model[0]) != spec.clip_dir:
            transform = model[1]
            spec = dataclasses.replace(spec, clip_dir=Path(model[0]), tagger_dir=None, clip_tags=None)
        decode = DecodeSpec(transform.size if transform else 224, self.daemon.config.decode.max_pixels, transform, None)
        prepared = indexer.decode_pool.schedule(prepare_query_image, (data, name, decode), timeout=60).result()
        inferred = indexer.infer_pool.schedule(infer, (spec, prepared[None], None), timeout=120).result()
        return inferred.embeddings[0]

    def do_thumbnail(self, real: str, dest: str, pixels: int, max_pixels: int) -> str:
        from pixdex.indexer import thumbnails

        indexer = self.daemon.indexer
        if indexer is None:
            raise Unavailable("the indexing core is reopening; try again in a moment")
        made: str = indexer.decode_pool.schedule(thumbnails.make_thumbnail, (real, dest, pixels, max_pixels),
                                                 timeout=60).result()
        return made


def _worker_state(daemon: Any) -> dict[str, Any]:
    """Ask the model worker what it holds; a busy worker answers after its batch, so wait briefly."""
    from pixdex.indexer.inference import worker_state

    indexer = daemon.indexer
    if indexer is None:
        return {}
    try:
        return dict(indexer.infer_pool.schedule(worker_state, (indexer.spec,)).result(timeout=2.0))
    except Exception:  # noqa: BLE001 - busy or restarting: status must not wait for it
        return {}


def portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (pixdex's errors do), else one that says the same."""
    try:
        copy: BaseException = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
        return copy
    except Exception:  # noqa: BLE001
        if isinstance(exc, PixdexError):
            return PixdexError(str(exc))
        return RuntimeError(f"{type(exc).__name__}: {exc}")
