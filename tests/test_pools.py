"""Worker pools that exit when idle: the processes are gone after `workers_idle`, the next task starts them again."""

from __future__ import annotations

import os
import time

import psutil

from pixdex.indexer.pools import IdlePool, make_pool
from pixdex.indexer.sections import PipelineSettings


def test_an_idle_pool_lets_its_workers_exit_and_starts_them_again_for_the_next_task() -> None:
    settings = PipelineSettings(nice=0, idle_io=False, idle_cpu=False)
    pool = IdlePool(lambda: make_pool(1, settings), idle=0.5)
    try:
        first = pool.schedule(os.getpid).result(timeout=60)
        assert psutil.pid_exists(first)
        deadline = time.monotonic() + 30
        while pool.alive or (psutil.pid_exists(first) and psutil.Process(first).status() != psutil.STATUS_ZOMBIE):
            assert time.monotonic() < deadline, "the idle worker did not exit"
            time.sleep(0.05)
        second = pool.schedule(os.getpid).result(timeout=60)
        assert second != first and pool.starts == 2
    finally:
        pool.stop()
        pool.join(timeout=10)


def test_a_pool_with_no_idle_limit_keeps_its_workers() -> None:
    settings = PipelineSettings(nice=0, idle_io=False, idle_cpu=False)
    pool = IdlePool(lambda: make_pool(1, settings), idle=0)
    try:
        first = pool.schedule(os.getpid).result(timeout=60)
        time.sleep(1.0)
        assert pool.alive and pool.schedule(os.getpid).result(timeout=60) == first
    finally:
        pool.stop()
        pool.join(timeout=10)


def test_asking_for_status_does_not_start_a_model_worker_that_exited_idle() -> None:
    """/status and /metrics (scraped every few seconds) ask the model worker what it holds: once it exited
    for idleness they must not start it again, or it would never stay gone."""
    from types import SimpleNamespace
    from typing import Any

    from pixdex.daemon.indexing_core import IndexingCore

    class Gone:
        alive = False

        def schedule(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the status started the model worker again")

    core = IndexingCore(SimpleNamespace(indexer=SimpleNamespace(infer_pool=Gone(), spec=None)))  # type: ignore[arg-type]
    assert core._workers()["loaded"] == []


def test_the_first_file_event_of_a_burst_starts_workers_that_exited_idle() -> None:
    """Their start-up (seconds: a spawned interpreter, its imports) runs during the debounce, not after it."""
    from types import SimpleNamespace
    from typing import Any

    from watchdog.events import FileCreatedEvent

    from pixdex.daemon.runtime import Daemon
    from pixdex.daemon.watcher import Watcher
    from pixdex.indexer.sections import WatchSettings

    made: list[str] = []

    class Fake:
        def schedule(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("not used")

        def stop(self) -> None:
            pass

        def join(self, timeout: float | None = None) -> None:
            pass

    def make(name: str) -> Any:
        made.append(name)
        return Fake()

    daemon = object.__new__(Daemon)
    daemon.indexer = SimpleNamespace(decode_pool=IdlePool(lambda: make("decode"), 60),  # type: ignore[assignment]
                                     infer_pool=IdlePool(lambda: make("model"), 60))
    watcher = Watcher(WatchSettings(), [], [], [], lambda why: None)
    watcher.on_activity = daemon._warm_up
    watcher.on_any_event(FileCreatedEvent("/pics/new.jpg"))
    deadline = time.monotonic() + 10
    while sorted(made) != ["decode", "model"]:
        assert time.monotonic() < deadline, made
        time.sleep(0.01)
    watcher.on_any_event(FileCreatedEvent("/pics/other.jpg"))  # the same burst: nothing more
    time.sleep(0.1)
    assert sorted(made) == ["decode", "model"]
