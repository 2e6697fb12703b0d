"""The worker pools: pebble `ProcessPool`s started with *spawn*, lowered to idle CPU and I/O priority from
inside (so it holds outside systemd too).

- the decode pool (`decode.workers` processes) runs `prepare.prepare` — read, hash, decode, preprocess,
  embedded metadata — and the sidecar jobs (`sidecars.tasks`), so neither pyexiv2 nor Pillow ever runs in
  the process that serves queries;
- the inference worker (one process) owns the model sessions (`inference`), cached with an idle TTL;
- the OCR worker (one process, `[ocr]`, in the daemon and `pixdex index`) reads the text in images
  (`ocr.engine`) at nice 19 and SCHED_IDLE: it only takes CPU nothing else wants.

pebble replaces a worker that dies (a decoder segfault) and fails only the task it held, with
`ProcessExpired`; a task that runs past its timeout is killed the same way. The caller turns those into
the file's failure.

An `IdlePool` stops its workers (and pebble's threads, which poll ten times a second) once no task ran for
`pipeline.workers_idle` seconds, and starts them again for the next task: an idle daemon holds no worker
processes. The restart (a spawned interpreter and its imports) goes into that next task's time.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing import resource_tracker
from typing import Any, Protocol, TypeVar

import psutil
from pebble import ProcessPool

from pixdex.indexer.sections import PipelineSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Pool(Protocol):
    """What pixdex asks of a worker pool (pebble's `ProcessPool`; tests give a stand-in)."""

    def schedule(self, function: Callable[..., T], args: tuple[Any, ...] = ..., *,
                 timeout: float | None = ...) -> Future[T]: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = ...) -> None: ...


def make_pool(workers: int, settings: PipelineSettings) -> Pool:
    """A pool whose workers never see the terminal's Ctrl-C: SIGINT is blocked while the pool (and its
    threads, which start the workers, now and when they replace one) are created, and a blocked
    signal stays blocked across exec. Stopping them is the parent's job."""

    # Blocked first, then ignored (children are started ignoring it); Linux keeps a blocked signal pending
    # while it is ignored, so a Ctrl-C in this window reaches this process once the handler is back. One
    # already pending when SIG_IGN is set would be discarded (POSIX): that one is delivered first. And the
    # resource tracker is started before: starting it unblocks SIGINT in the thread that does it (pebble's,
    # inside the window), which then takes a Ctrl-C and drops it (ignored).
    resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    main = threading.current_thread() is threading.main_thread()
    if main and signal.SIGINT in signal.sigpending():
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # the handler runs now (KeyboardInterrupt)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # a handler that did not raise: go on
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        pool = ProcessPool(max_workers=workers, initializer=lower_priority,
                           initargs=(settings.nice, settings.idle_io, settings.idle_cpu),
                           context=multiprocessing.get_context("spawn"))
        pool.active  # noqa: B018 - pebble starts its threads and workers lazily: start them in this window
        return pool
    finally:
        if main:
            signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def lower_priority(nice: int, idle_io: bool, idle_cpu: bool = False) -> None:
    """Run in each worker as it starts: CPU niceness at least `nice` (the daemon's indexing process runs at
    it already, and its workers stay there), optionally the SCHED_IDLE class (any process may lower itself
    to it, sched(7)), I/O to the idle class."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.nice(nice - current)
    if idle_cpu and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:  # priority is a courtesy
            log.debug("cannot enter SCHED_IDLE: %s", exc)
    if idle_io:
        try:
            psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
        except (OSError, AttributeError) as exc:  # not Linux, or not allowed: priority is a courtesy
            log.debug("cannot set idle I/O priority: %s", exc)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def stop_pool(pool: Pool) -> None:
    """Stop the workers (what they hold is dropped: it stays queued) and wait for them."""
    pool.stop()
    pool.join(timeout=10)


def exit_reason(exitcode: int | None) -> str:
    """How a worker ended, as a file's failure says it (`killed by SIGSEGV`, `exit code 1`)."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            pass
    return f"exit code {exitcode}"


class IdlePool:
    """A `Pool` made on first use by `make` and stopped after `idle` seconds without a task (0: kept)."""

    def __init__(self, make: Callable[[], Pool], idle: float) -> None:
        self._make = make
        self.idle = idle
        self._pool: Pool | None = None
        self._running = 0  # tasks scheduled and not finished
        self._last = time.monotonic()
        self._changed = threading.Condition()
        self._closed = False
        self.starts = 0
        self._reaper: threading.Thread | None = None
        self._stopped: Pool | None = None

    @property
    def alive(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        """Start the workers now (before other threads exist: see `make_pool`)."""
        with self._changed:
            if not self._closed:
                self._ensure()

    def schedule(self, function: Callable[..., T], args: tuple[Any, ...] = (),
                 timeout: float | None = None) -> Future[T]:
        with self._changed:
            if self._closed:
                raise RuntimeError("the pool is stopped")
            pool = self._ensure()
            self._running += 1
            future = pool.schedule(function, args, timeout=timeout)
        future.add_done_callback(self._finished)
        return future

    def stop(self) -> None:
        with self._changed:
            self._closed = True
            pool, self._pool = self._pool, None
            self._changed.notify_all()
        if pool is not None:
            pool.stop()
            self._stopped = pool

    def join(self, timeout: float | None = None) -> None:
        if self._stopped is not None:
            self._stopped.join(timeout=timeout)

    def _ensure(self) -> Pool:
        if self._pool is None:
            self._pool = self._make()
            self.starts += 1
            self._last = time.monotonic()
            self._changed.notify_all()
            if self.idle > 0 and self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="pixdex-pool-idle", daemon=True)
                self._reaper.start()
        return self._pool

    def _finished(self, _future: Future[Any]) -> None:
        with self._changed:
            self._running -= 1
            self._last = time.monotonic()
            self._changed.notify_all()

    def _reap(self) -> None:
        """Sleeps while there is no pool or a task runs; stops the pool once it sat idle for `idle` seconds."""
        with self._changed:
            while not self._closed:
                if self._pool is None or self._running:
                    self._changed.wait()
                    continue
                left = self._last + self.idle - time.monotonic()
                if left > 0:
                    self._changed.wait(left)
                    continue
                pool, self._pool = self._pool, None
                log.debug("worker pool idle for %.0f s: its processes exit", self.idle)
                stop_pool(pool)  # under the lock: a task scheduled meanwhile waits for the next pool
