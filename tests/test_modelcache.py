"""The model cache: load on first use, once across threads, unload after the idle TTL, reload after."""

from __future__ import annotations

import subprocess
import sys
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


_UNLOAD_PROBE = """
import sys, time
from pathlib import Path
import numpy as np, psutil
from pixdex.indexer.modelcache import ModelCache
from pixdex.indexer.session import OnnxSession

def uss():
    return psutil.Process().memory_full_info().uss
cache = ModelCache(ttl=0.01)
session = OnnxSession(Path(sys.argv[1]), threads=1, cache=cache)
before = uss()
session.run(np.zeros((1, 4096), np.float32))
session.input  # what the model classes read (image size, input dtype) must not keep the session alive
loaded = uss()
deadline = time.monotonic() + 30
while cache.loaded():  # the sweeper thread unloads it
    assert time.monotonic() < deadline
    time.sleep(0.05)
time.sleep(0.2)  # the sweep's malloc_trim
print(before, loaded, uss())
"""


def test_an_unloaded_session_gives_its_memory_back(tmp_path: Path) -> None:
    """A 64 MiB graph: once the cache drops it, the process's own memory (USS) falls back to within a
    quarter of what loading it took. Run in a fresh process so that nothing else moves the figure."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4096])],
                              [numpy_helper.from_array(weights, "w")])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    del weights, graph
    probe = subprocess.run([sys.executable, "-c", _UNLOAD_PROBE, str(path)], capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    before, loaded, after = map(int, probe.stdout.split())
    assert loaded - before > 48 << 20, (before, loaded, after)
    assert after - before < (loaded - before) / 4, f"kept {(after - before) >> 20} of {(loaded - before) >> 20} MiB"
