"""Blame: a batch the model fails on is retried one file at a time, so only the guilty file fails;
a model that cannot load fails nothing. The model worker is replaced by a pool that answers from
a rule, to make one file fail on demand (the crash and load paths run for real in test_core.py)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from pixdex.indexer.catalog.rows import FileStat, ImageRow, QueueEntry
from pixdex.indexer.errors import InferenceError, ModelError
from pixdex.indexer.inference import Inferred, ModelInfo
from pixdex.indexer.pipeline import Pipeline
from pixdex.indexer.prepare import Prepared
from pixdex.indexer.preprocess import ClipTransform
from pixdex.indexer.stages.stats import Stats
from pixdex.indexer.stages.work import Work


class RulePool:
    """Answers `infer` tasks: fails any batch holding a NaN image, embeds the others."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.batches: list[int] = []

    def schedule(self, function: Any, args: tuple[Any, ...], timeout: float | None = None) -> Future[Any]:
        _spec, clip, _tags = args
        self.batches.append(len(clip))
        future: Future[Any] = Future()
        if np.isnan(clip).any():
            future.set_exception(self.error)
        else:
            future.set_result(Inferred(np.ones((len(clip), 4), np.float32), [[] for _ in clip], 1))
        return future


def works(n: int, bad: set[int]) -> list[Work]:
    out = []
    for k in range(n):
        row = ImageRow(k + 1, f"/p/{k}.png".encode(), 0, k, 1, 1, None, "pending", None, None, None, None, None,
                       None, None, "[]", "", None, 0.0, 0.0, 1)
        image = np.full((3, 4, 4), np.nan if k in bad else 0.5, np.float32)
        out.append(Work(QueueEntry(row, 1, 1, "new"), Prepared(FileStat(row.path, 0, k, 1, 1), "h", clip_input=image)))
    return out


def pipeline(pool: RulePool) -> Pipeline:
    p = object.__new__(Pipeline)
    p.info = ModelInfo("clip@x", 4, ClipTransform(4, (0, 0, 0), (1, 1, 1)), None, None)
    p.spec = None  # type: ignore[assignment]
    p.infer_pool = pool
    p.stats = Stats()
    p._stopping = threading.Event()
    p._inflight_lock = threading.Lock()
    p._upstream = p._at_writer = 0
    return p


def test_a_failed_batch_is_retried_file_by_file_and_only_the_guilty_file_fails() -> None:
    pool = RulePool(InferenceError("/m/visual/model.onnx: inference failed: bad values"))
    batch = works(6, bad={3})
    pipeline(pool)._infer(batch)
    assert pool.batches == [6, 1, 1, 1, 1, 1, 1]
    assert [w.error is not None for w in batch] == [False, False, False, True, False, False]
    assert "model failed on this file" in (batch[3].error or "")
    assert all(w.embedding is not None for k, w in enumerate(batch) if k != 3)


def test_a_model_that_cannot_load_blames_no_file() -> None:
    pool = RulePool(ModelError("/m/visual/model.onnx: ONNX Runtime cannot load this model"))
    batch = works(4, bad={0, 1, 2, 3})
    with pytest.raises(ModelError):
        pipeline(pool)._infer(batch)
    assert all(w.error is None for w in batch) and pool.batches == [4]


@pytest.mark.parametrize("stage", ["batch", "infer", "sidecar"])
def test_a_stage_stopped_while_it_holds_work_passes_stop_on(stage: str) -> None:
    """A daemon stopped just after start hung for minutes: the batch stage, holding a partial batch when
    the stop came, returned without passing STOP on, so every later stage waited on its inbox for good."""
    from types import SimpleNamespace

    from pixdex.indexer.stages.work import STOP

    p = pipeline(RulePool(InferenceError("unused")))
    p.config = SimpleNamespace(models=SimpleNamespace(batch_size=8), pipeline=SimpleNamespace(batch_wait=0.05))
    p._inflight_lock = threading.Lock()
    inbox: Any = __import__("queue").Queue()
    outbox: Any = __import__("queue").Queue(maxsize=4)
    inbox.put(works(2, set()) if stage != "batch" else works(1, set())[0])
    if stage == "batch":
        p._upstream = 2  # another file on its way: the batch stage holds the first for it
        threading.Timer(0.01, p._stopping.set).start()  # while it waits out batch_wait with one image held
    else:
        p._stopping.set()
    thread = threading.Thread(target=getattr(p, stage), args=(inbox, outbox), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    passed = [outbox.get_nowait() for _ in range(outbox.qsize())]
    assert passed and passed[-1] is STOP
