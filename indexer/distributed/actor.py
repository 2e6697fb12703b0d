"""The model stage of the job: a pool of stateful actors (`map_batches` with a class), each holding pixdex's model
sessions through the same model cache as the daemon's model worker (`inference.infer`: CLIP image tower, tagger,
CLIP-vocabulary tags).

An actor takes the model files from the object store (`bundle.materialise` into the node's cache) when it starts.
With GPUs (`num_gpus`), onnxruntime's CUDA provider comes first; on a CPU node it runs on the CPU. A batch the
model fails on is retried one image at a time before any image is blamed, as the local pipeline does; a model
that cannot load raises (`ModelError`): the job stops and no file is blamed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from numpy.typing import NDArray

from pixdex.indexer import faults
from pixdex.indexer.distributed.bundle import ModelBundle, materialise, node_model_root
from pixdex.indexer.distributed.tasks import EMBED, FAILED, Batch, column, node_id
from pixdex.indexer.errors import InferenceError
from pixdex.indexer.inference import ModelSpec, infer
from pixdex.indexer.sections import ClipTagSettings, Runtime, TaggerSettings


@dataclass(frozen=True)
class ActorSpec:
    """How an actor builds its `ModelSpec` around the files it received."""

    tagger: TaggerSettings
    clip_tags: ClipTagSettings | None
    threads: int
    idle_ttl: float
    runtime: Runtime
    clip_size: int  # the CLIP input's side (the decoders' `ClipTransform.size`)
    tagger_size: int | None
    gpus: float = 0.0

    def with_gpu(self) -> ActorSpec:
        """CUDA first when the actor is given GPUs (the CPU stays the last resort: `session.choose_providers`)."""
        if self.gpus <= 0 or "cuda" in self.runtime.providers:
            return self
        return dataclasses.replace(self, runtime=Runtime(("cuda", *self.runtime.providers), self.runtime.optimization))


class EmbedActor:
    def __init__(self, bundle: list[Any], spec: ActorSpec) -> None:
        """`bundle`: [the ObjectRef of the `ModelBundle`] (in a list, so Ray hands the reference, not the value,
        and the files are fetched here, once per actor)."""
        models: ModelBundle = ray.get(bundle[0])
        root = materialise(models, node_model_root())
        spec = spec.with_gpu()
        self.spec = spec
        self.node = node_id()
        self.model = ModelSpec(root / models.clip, root / models.tagger if models.tagger else None, spec.tagger,
                               spec.threads, spec.idle_ttl, spec.clip_tags,
                               root / "vocabulary" if models.vocabulary else None, spec.runtime)

    def __call__(self, batch: Batch) -> Batch:
        status, reason = [str(s) for s in batch["status"]], [str(r) for r in batch["reason"]]
        ready = [n for n, s in enumerate(status) if s == EMBED]
        faults.crash_model_on(bytes(batch["path"][n]) for n in ready)
        embeddings: list[bytes] = [b""] * len(status)
        tags = ["[]"] * len(status)
        for n, result in self._embed(batch, ready).items():
            if isinstance(result, str):
                status[n], reason[n] = FAILED, result
            else:
                embeddings[n], tags[n] = result[0].tobytes(), json.dumps(result[1])
        out = {key: batch[key] for key in ("path", "digest", "decode_node")}
        out.update(status=column(status), reason=column(reason), embedding=column(embeddings), tags=column(tags),
                   embed_node=column([self.node if n in ready else "" for n in range(len(status))]))
        return out

    def _embed(self, batch: Batch, ready: list[int]) -> dict[int, tuple[NDArray[np.float32], list[str]] | str]:
        """Each ready row's (embedding, tag names), or why the model failed on it."""
        if not ready:
            return {}
        try:
            return self._run(batch, ready)
        except InferenceError as exc:
            if len(ready) == 1:
                return {ready[0]: f"model failed on this file: {exc}"}
        out: dict[int, tuple[NDArray[np.float32], list[str]] | str] = {}
        for n in ready:  # the batch failed: one at a time, so only the file the model fails on is blamed
            try:
                out.update(self._run(batch, [n]))
            except InferenceError as exc:
                out[n] = f"model failed on this file: {exc}"
        return out

    def _run(self, batch: Batch, rows: list[int]) -> dict[int, tuple[NDArray[np.float32], list[str]] | str]:
        size = self.spec.clip_size
        clip = np.stack([np.frombuffer(bytes(batch["clip"][n]), np.float32).reshape(3, size, size) for n in rows])
        tag_batch = None
        if self.spec.tagger_size:
            side = self.spec.tagger_size
            tag_batch = np.stack([np.frombuffer(bytes(batch["tag"][n]), np.float32).reshape(side, side, 3)
                                  for n in rows])
        result = infer(self.model, clip, tag_batch)
        return {n: (np.asarray(result.embeddings[i], dtype=np.float32), [str(t["name"]) for t in result.tags[i]])
                for i, n in enumerate(rows)}
