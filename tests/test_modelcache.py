"""The model cache: load on first use, once across threads, unload after the idle TTL, reload after."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pixdex.indexer.embedder import ClipModel
from pixdex.indexer.errors import InferenceError
from pixdex.indexer.modelcache import ModelCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_values_load_once_are_shared_and_unload_only_when_idle_past_the_ttl() -> None:
    clock = Clock()
    cache = ModelCache(ttl=10, clock=clock)
    loads: list[int] = []
    barrier = threading.Barrier(8)

    def loader() -> object:
        loads.append(1)
        time.sleep(0.05)  # slow enough for every thread to ask at once
        return object()

    seen: list[object] = []

    def worker() -> None:
        barrier.wait()
        with cache.use("clip", loader) as value:
            seen.append(value)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len({id(v) for v in seen}) == 1
    with cache.use("clip", loader):
        clock.now = 100
        assert cache.sweep() == 0  # in use: never unloaded, however long ago it was loaded
    clock.now = 105
    assert cache.sweep() == 0 and cache.loaded() == ["clip"]  # idle 5 s of 10
    clock.now = 111
    assert cache.sweep() == 1 and cache.loaded() == []
    with cache.use("clip", loader):
        pass
    assert cache.loads("clip") == 2


def test_real_onnx_session_is_unloaded_after_the_ttl_and_reloaded_on_use(model_dir: Path) -> None:
    cache = ModelCache(ttl=0.3)
    clip = ClipModel(model_dir / "clip" / "pixdex-standin-clip", threads=1, cache=cache)
    batch = np.zeros((1, 3, clip.image_size, clip.image_size), dtype=np.float32)
    first = clip.embed_images(batch)
    assert len(cache.loaded()) == 1
    deadline = time.monotonic() + 10
    while cache.loaded():  # the sweeper thread unloads it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    again = clip.embed_images(batch)
    assert np.allclose(first, again) and cache.loads(clip.visual.key) == 2


def test_onnxruntime_errors_become_inference_errors(model_dir: Path) -> None:
    clip = ClipModel(model_dir / "clip" / "pixdex-standin-clip")
    wrong = np.zeros((1, 3, 7, 7), dtype=np.float32)  # the wrong input size: ORT's own exception type
    with pytest.raises(InferenceError, match="inference failed"):
        clip.embed_images(wrong)
