"""The indexing process: `core_main` (its entry point, spawned by `core_process.CoreProcess`) and `CoreHost`,
which answers the serving process's calls with `IndexingCore` and sends its events up the pipe."""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import os
import pickle
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from pixdex.daemon.core_api import CALLS, Core
from pixdex.daemon.core_process import CLOSE, SIGNALS
from pixdex.daemon.indexing_core import IndexingCore
from pixdex.daemon.logs import setup_logging
from pixdex.daemon.runtime import Daemon
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.settings import Config

PR_SET_PDEATHSIG = 1  # prctl(2)


def core_main(config: Config, conn: Connection, level: int, parent: int) -> None:
    """The indexing process: dies with its parent, leaves signals to it, runs at the workers' niceness."""
    _die_with_parent(parent)
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent passes its SIGUSR1 on: stacks to the log
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
    """The child's side: one `Daemon` behind an `IndexingCore`, answering the parent's calls on threads."""

    def __init__(self, config: Config, conn: Connection, holder: int) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self.daemon = Daemon(config, PipeBus(self.send), holder)
        self.daemon.on_collections = lambda collections: self.send(("collections", collections))
        self.core: Core = IndexingCore(self.daemon)

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):  # the parent gone: PR_SET_PDEATHSIG ends us
            self.conn.send(message)

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
            if method == CLOSE:
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
        """One call: the `IndexingCore` method of that name, if `core_api.CALLS` has it."""
        try:
            if method not in CALLS:
                raise PixdexError(f"{method!r} is not a call the indexing process answers")
            reply: tuple[Any, ...] = ("reply", call_id, True, getattr(self.core, method)(*args))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply = ("reply", call_id, False, portable(exc))
        try:
            pickle.dumps(reply[3])
        except Exception as exc:  # noqa: BLE001
            reply = ("reply", call_id, False, PixdexError(f"{method}: an answer that cannot be sent ({exc})"))
        self.send(reply)


def portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (pixdex's errors do), else one that says the same."""
    try:
        copy: BaseException = pickle.loads(pickle.dumps(exc))
        return copy
    except Exception:  # noqa: BLE001
        if isinstance(exc, PixdexError):
            return PixdexError(str(exc))
        return RuntimeError(f"{type(exc).__name__}: {exc}")
