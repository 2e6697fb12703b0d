"""A single new file is not held by waits meant for bursts, and an idle pipeline does not poll.

With `batch_wait` and `commit_seconds` set far longer than the test waits, a lone file still goes through
and is committed: the batch stage flushes when nothing else was fed, the writer commits when everything in
flight waits for it. The feed looks at the queue when woken, not on a timer; the scanner sleeps while the
pipeline is quiet."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, gradient, write_config

from pixdex.indexer.settings import load_config


def test_a_lone_file_skips_the_batch_wait_and_the_commit_wait(env: Env, model_dir: Path) -> None:
    from pixdex.indexer.core import Indexer

    write_config(env.config, model_dir, [env.pics], "[pipeline]\nbatch_wait = 60\ncommit_seconds = 60\n")
    config = load_config(env.config, env.environ)
    with Indexer(config) as indexer:
        gradient(1).save(env.pics / "first.png")
        indexer.scan([env.pics])
        generation = indexer.writer.generation
        assert indexer.writer.wait_for(generation + 1, timeout=30), "waited out batch_wait or commit_seconds"
        # The generation is published before the pipeline hears of the commit (its "indexed" event must find the
        # image searchable): its count follows at once, far within the 60 s waits.
        deadline = time.monotonic() + 10
        while indexer.stats.committed == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert indexer.stats.committed == 1


def test_an_idle_feed_does_not_poll_the_queue_and_wakes_on_a_commit(env: Env, model_dir: Path) -> None:
    from pixdex.indexer.core import Indexer

    config = load_config(env.config, env.environ)
    with Indexer(config) as indexer:
        pipeline = indexer.pipeline
        looks: list[float] = []
        real = pipeline._queue_db.queued

        def counted(*args: Any, **kwargs: Any) -> Any:
            looks.append(time.monotonic())
            return real(*args, **kwargs)

        pipeline._queue_db.queued = counted  # type: ignore[method-assign]
        pipeline.wake()
        time.sleep(0.3)
        settled = len(looks)
        time.sleep(2.0)
        assert len(looks) == settled, f"{len(looks) - settled} looks at an empty queue in 2 s"
        assert pipeline.quiet()
        gradient(2).save(env.pics / "second.png")
        indexer.scan([env.pics])  # queues it: the scan's commit wakes the feed
        deadline = time.monotonic() + 30
        while indexer.stats.committed < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(looks) > settled


def test_the_scanner_sleeps_while_nothing_is_to_do_and_a_job_wakes_it(env: Env, model_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pixdex.daemon import runtime
    from pixdex.daemon.events import EventBus

    config = load_config(env.config, env.environ)
    daemon = runtime.Daemon(config, EventBus())
    steps = []
    real = daemon._step

    def counted() -> None:
        steps.append(time.monotonic())
        real()

    monkeypatch.setattr(daemon, "_step", counted)
    daemon.open()
    try:
        deadline = time.monotonic() + 30
        while not (daemon.indexer and daemon.indexer.pipeline.quiet() and daemon.last_scan):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        settled = len(steps)
        time.sleep(2.0)
        assert len(steps) - settled <= 2, f"{len(steps) - settled} scanner steps in 2 idle seconds"
        started = time.monotonic()
        assert daemon.submit(lambda: threading.current_thread().name).result(timeout=5) == "pixdex-scanner"
        assert time.monotonic() - started < 2
    finally:
        daemon.close()
