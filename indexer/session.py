"""ONNX Runtime sessions: provider choice, thread count, loading through a model cache, call counting.

The model classes (`embedder`, `tagger`) own what the numbers mean; this module owns only how
a graph is run. A session is loaded on first use through a `ModelCache` (unloaded again after its
idle TTL). A graph that cannot be loaded raises `ModelError`; ONNX Runtime's own exceptions while
running (they are not `RuntimeError`) become `InferenceError`. `calls` and `items` count work.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from pixdex.indexer.errors import InferenceError, ModelError
from pixdex.indexer.modelcache import ModelCache
from pixdex.indexer.sections import Runtime

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "rocm": "ROCMExecutionProvider",
             "openvino": "OpenVINOExecutionProvider", "coreml": "CoreMLExecutionProvider",
             "directml": "DmlExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
_warned: set[str] = set()


def choose_providers(asked: tuple[str, ...] | list[str]) -> list[str]:
    """ONNX Runtime provider names for `[models] providers` (in order, CPU always last), leaving out —
    with a warning, once — those this onnxruntime build does not have."""
    available = set(ort.get_available_providers())
    chosen = []
    for name in asked:
        provider = PROVIDERS[name]
        if provider in available:
            chosen.append(provider)
        elif name not in _warned:
            _warned.add(name)
            log.warning("[models] providers asks for %s, but this onnxruntime has no %s (available: %s; install the "
                        "onnxruntime build for it, e.g. onnxruntime-gpu for CUDA); using the CPU", name, provider,
                        ", ".join(sorted(available)))
    return [p for p in chosen if p != "CPUExecutionProvider"] + ["CPUExecutionProvider"]


@dataclass(frozen=True)
class InputSpec:
    """A graph's first input as plain data. ONNX Runtime's own `NodeArg` keeps its whole session (weights,
    arenas) alive for as long as it is referenced, so it must never outlive a `with cache.use(...)`."""

    name: str
    type: str
    shape: tuple[int | str | None, ...]


class OnnxSession:
    """One ONNX graph, loaded on first use."""

    def __init__(self, path: Path, threads: int = 0, cache: ModelCache | None = None,
                 runtime: Runtime = Runtime()) -> None:
        if not path.is_file():
            raise ModelError(f"{path}: model file is missing")
        self.path = path
        self.threads = threads
        self.runtime = runtime
        self.used: list[str] = []  # the providers the loaded session runs on
        self.cache = cache or ModelCache(ttl=0)
        self.key = (str(path), threads)
        self.calls = 0
        self.items = 0
        self._input: InputSpec | None = None

    def _load(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = LEVELS[self.runtime.optimization]
        providers = choose_providers(self.runtime.providers)
        try:
            session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            if providers == ["CPUExecutionProvider"]:
                raise ModelError(f"{self.path}: ONNX Runtime cannot load this model: {exc}") from exc
            log.warning("%s: cannot load with %s (%s); using the CPU", self.path, providers[0], exc)
            try:
                session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            except Exception as again:
                raise ModelError(f"{self.path}: ONNX Runtime cannot load this model: {again}") from again
        self.used = session.get_providers()
        if providers[0] != "CPUExecutionProvider" and self.used[0] != providers[0]:
            log.warning("%s: %s did not start; running on %s", self.path, providers[0], self.used[0])
        log.info("loaded %s with %s", self.path, self.used)
        return session

    @property
    def input(self) -> InputSpec:
        if self._input is None:
            with self.cache.use(self.key, self._load) as session:
                first = session.get_inputs()[0]
                self._input = InputSpec(str(first.name), str(first.type), tuple(first.shape))
                del first  # a NodeArg holds the session: see InputSpec
        return self._input

    def run(self, array: NDArray[Any]) -> NDArray[np.float32]:
        """Feed `array` to the graph's first input and return its first output."""
        with self.cache.use(self.key, self._load) as session:
            self.calls += 1
            self.items += int(array.shape[0])
            first = self.input
            if first.type == "tensor(float16)" and array.dtype == np.float32:
                array = array.astype(np.float16)  # an fp16 export: its input is half precision too
            try:
                output = session.run(None, {first.name: array})[0]
            except Exception as exc:  # onnxruntime's Fail, InvalidArgument, … derive from Exception only
                raise InferenceError(f"{self.path}: inference failed: {exc}") from exc
        return np.asarray(output, dtype=np.float32)


def fingerprint(*paths: Path) -> str:
    """A short id of model files: their sizes plus the first and last MiB, cheap even for 1 GB graphs."""
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return digest.hexdigest()
