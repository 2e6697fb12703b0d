"""The indexing core in a process of its own, so the serving process only reads and answers.

`pixdex serve` is two processes. The serving process (the parent) holds the event loop, the HTTP
sites, the query threads and the event bus; the indexing process (this module's `core_main`, a
spawned child) holds `runtime.Daemon` — the watcher, the scanner thread, the pipeline's threads,
the writer and the worker pools. Queries never wait for the GIL behind the pipeline's Python work,
and the indexing process runs at the workers' niceness (`pipeline.nice`), so the kernel runs a
query first when both want a core.

They talk over one `multiprocessing` pipe. `CoreProcess` is the serving process's `Core`: each call
is sent as `(id, method, args)` with a method of `core_api.CALLS`; the child (`core_child.py`) answers
each on a thread of its own with `("reply", id, ok, value)` and pushes `("event", kind, data)` (the
bus's events), `("collections", list)` (whenever the watched folders change, before the reply of the
call that changed them) and, once, `("opened", error, collections)`.

The child dies with the parent (PR_SET_PDEATHSIG), so a `kill -9` of `pixdex serve` leaves no
indexing process holding the data directory's lock. When the child dies on its own, the parent
logs its exit code and starts another; calls meanwhile get `Unavailable` (HTTP 503).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from typing import Any, Concatenate, ParamSpec, TypeVar

from numpy.typing import NDArray

from pixdex.daemon.core_api import CALLS, Core, Unavailable, Watch
from pixdex.daemon.events import EventBus
from pixdex.daemon.stored import model_fix
from pixdex.indexer.collections import Collection
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # the serving process's to handle
STATE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 120.0
CLOSE = "close"  # the one message that is not a `Core` call: the child commits, saves and exits


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
        return model_fix(self.config)

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
            proc = context.Process(target=_core_main, name="pixdex-core",
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
        if self._proc is None or self._conn is None:
            return
        closed: Future[Any] = Future()
        with self._lock:
            call_id = next(self._ids)
            self._pending[call_id] = closed
            try:
                self._conn.send((call_id, CLOSE, ()))
            except (OSError, ValueError):
                closed.set_exception(Unavailable("gone"))
        try:
            closed.result(timeout=CLOSE_TIMEOUT)
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

    # Calls: the `Core` ----------------------------------------------------------------------------
    def ask(self, method: Callable[Concatenate[Core, P], T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Call `method` (one of `Core`'s) in the indexing process; the future resolves with its result. Routes
        await it (`asyncio.wrap_future`) rather than hold a thread."""
        future: Future[T] = Future()
        if kwargs or CALLS.get(method.__name__) is not method:
            future.set_exception(TypeError(f"{method.__name__}: not a Core method, or keyword arguments"))
            return future
        with self._lock:
            conn = self._conn
            if conn is None:
                future.set_exception(Unavailable("the indexing process is starting again; try again in a moment"))
                return future
            call_id = next(self._ids)
            self._pending[call_id] = future
            try:
                conn.send((call_id, method.__name__, args))
            except (OSError, ValueError):
                self._pending.pop(call_id, None)
                future.set_exception(Unavailable("the indexing process is starting again; try again in a moment"))
        return future

    def pause(self, paused: bool) -> None:
        self.ask(Core.pause, paused).result()

    def reindex(self, paths: list[str]) -> int:
        return self.ask(Core.reindex, paths).result()

    def watch_add(self, path: str, name: str | None) -> Watch:
        return self.ask(Core.watch_add, path, name).result()

    def watch_remove(self, key: str) -> Watch:
        return self.ask(Core.watch_remove, key).result()

    def state(self, queued: int = 0, workers: bool = False) -> dict[str, Any]:
        """What the indexing process is doing now; Unavailable when it does not answer within 10 s."""
        try:
            return self.ask(Core.state, queued, workers).result(timeout=STATE_TIMEOUT)
        except FutureTimeout:
            raise Unavailable("the indexing process did not answer within 10 s; try again in a moment") from None

    def reload(self, config: Config) -> dict[str, Any]:
        return self.ask(Core.reload, config).result()

    def edit_item(self, image_id: int, add: list[str], remove: list[str], description: str | None,
                  rating: int | None = None, label: str | None = None) -> None:
        self.ask(Core.edit_item, image_id, add, remove, description, rating, label).result()

    def edit_items(self, ids: list[int], add: list[str], remove: list[str], rating: int | None,
                   label: str | None) -> list[dict[str, Any]]:
        return self.ask(Core.edit_items, ids, add, remove, rating, label).result()

    def trash_item(self, image_id: int) -> dict[str, Any]:
        return self.ask(Core.trash_item, image_id).result()

    def embed_upload(self, data: bytes, name: str, model: tuple[str, Any] | None) -> NDArray[Any]:
        return self.ask(Core.embed_upload, data, name, model).result()

    def thumbnail(self, real: bytes, dest: str, pixels: int, max_pixels: int) -> str:
        return self.ask(Core.thumbnail, real, dest, pixels, max_pixels).result()

    # The reader thread ------------------------------------------------------------------------
    def _read(self, conn: Connection, proc: Any, opened: Future[None], exited: threading.Event) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._handle(message, opened)
            except Exception:
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




def _core_main(config: Config, conn: Connection, level: int, parent: int) -> None:
    """The indexing process's entry point. Its modules (the watcher, the indexer, the worker pools) are
    imported here, in the child only: the serving process never loads them."""
    from pixdex.daemon.core_child import core_main

    core_main(config, conn, level, parent)
