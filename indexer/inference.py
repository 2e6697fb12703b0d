"""What the inference worker runs: the model sessions it keeps per `ModelSpec` (CLIP image tower, WD14 tagger,
CLIP-vocabulary tags; each session loads on first use and unloads after its idle TTL), and its jobs: check
that the models load (`describe`), embed and tag a batch (`infer`), say what it holds (`worker_state`).

The indexing process imports this module to name the jobs and read `ModelInfo`; the model classes —
onnxruntime and tokenizers behind them — are imported in the worker, by `_loaded`, so that process never
loads them (and the serving process imports them for its own text tower only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
from numpy.typing import NDArray

from pixdex.indexer.cliptags import ClipTagger, cache_path
from pixdex.indexer.modelcache import ModelCache
from pixdex.indexer.preprocess import ClipTransform
from pixdex.indexer.sections import DEFAULT_RUNTIME, ClipTagSettings, Runtime, TaggerSettings
from pixdex.indexer.settings import Config, runtime

if TYPE_CHECKING:  # imported by `_loaded`, in the worker
    from pixdex.indexer.embedder import ClipModel
    from pixdex.indexer.tagger import Tagger


@dataclass(frozen=True)
class ModelSpec:
    clip_dir: Path
    tagger_dir: Path | None
    tagger: TaggerSettings
    threads: int
    idle_ttl: float
    clip_tags: ClipTagSettings | None = None  # None: no vocabulary tags
    vocab_cache: Path | None = None  # where the vocabulary's text embeddings are cached
    runtime: Runtime = DEFAULT_RUNTIME  # [models] providers and optimization


@dataclass(frozen=True)
class ModelInfo:
    clip_id: str
    dim: int
    transform: ClipTransform | None
    tagger_id: str | None
    tagger_size: int | None
    missing: str = ""  # reduced mode: why the models could not load, and the command that fixes it

    @classmethod
    def reduced(cls, why: str) -> ModelInfo:
        """No models: names, folders and the files' own metadata are indexed; images wait for models."""
        return cls("", 0, None, None, None, why)

    @property
    def ids(self) -> tuple[str, str | None]:
        return self.clip_id, self.tagger_id

    @property
    def has_models(self) -> bool:
        return self.transform is not None

    @property
    def min_side(self) -> int:
        return max(self.transform.size if self.transform else 64, self.tagger_size or 0)


@dataclass
class Inferred:
    embeddings: NDArray[np.float32]
    tags: list[list[dict[str, object]]]
    calls: int


def model_spec(config: Config) -> ModelSpec:
    tagger = config.model_dir / "tagger" / config.models.tagger if config.models.tagger else None
    return ModelSpec(config.model_dir / "clip" / config.models.clip, tagger, config.tagger, config.models.threads,
                     config.models.idle_ttl, config.clip_tags if config.clip_tags.enabled else None,
                     config.cache_dir / "vocabulary", runtime(config))


@dataclass(frozen=True)
class _Loaded:
    clip: ClipModel
    tagger: Tagger | None
    vocab: ClipTagger | None
    cache: ModelCache


_models: dict[str, _Loaded] = {}  # this worker's, by repr(spec): the tagger settings hold a list


def _loaded(spec: ModelSpec) -> _Loaded:
    """This worker's models for `spec` (their sessions load on first use and unload after the TTL)."""
    key = repr(spec)
    if key not in _models:
        # Late, deliberately: onnxruntime and tokenizers load in the inference worker only (see above).
        from pixdex.indexer.embedder import ClipModel
        from pixdex.indexer.tagger import Tagger

        cache = ModelCache(spec.idle_ttl)
        clip = ClipModel(spec.clip_dir, spec.threads, cache, spec.runtime)
        tagger = Tagger(spec.tagger_dir, spec.tagger, spec.threads, cache, spec.runtime) if spec.tagger_dir else None
        vocab = None
        if spec.clip_tags is not None and spec.clip_tags.enabled:
            vocab = ClipTagger(clip, spec.clip_tags, spec.vocab_cache or spec.clip_dir / "vocabulary")
        _models[key] = _Loaded(clip, tagger, vocab, cache)
    return _models[key]


def loaded_clip(spec: ModelSpec) -> ClipModel:
    """This worker's CLIP model for `spec` (for the OCR stage's gate, `ocr.gate.gate_vector`)."""
    return _loaded(spec).clip


def describe(spec: ModelSpec) -> ModelInfo:
    """Check that the models load, and say what the decoders must produce for them. The tagger id names
    both taggers (WD14 and the CLIP vocabulary): a change of either tags the images again."""
    models = _loaded(spec)
    clip, tagger = models.clip, models.tagger
    clip.visual.input  # noqa: B018 - loads the image tower now: a broken model stops work before any file
    ids = [t.id for t in (tagger, models.vocab) if t is not None]
    return ModelInfo(clip.id, clip.dim, clip.transform, "+".join(ids) or None,
                     tagger.image_size if tagger else None)


def vocabulary_cache(spec: ModelSpec) -> Path | None:
    """The file of the CLIP vocabulary's text embeddings for `spec`, computed now when absent; None without
    vocabulary tags. A cluster's model workers get this file rather than each embedding the vocabulary."""
    vocab = _loaded(spec).vocab
    if vocab is None:
        return None
    vocab.matrix  # noqa: B018 - computes and caches the matrix when it is not cached yet
    return cache_path(vocab.cache_dir, vocab.clip.id, vocab.concepts, list(vocab.settings.templates))


def infer(spec: ModelSpec, clip_batch: NDArray[np.float32], tag_batch: NDArray[np.float32] | None) -> Inferred:
    models = _loaded(spec)
    tagger, vocab = models.tagger, models.vocab
    embeddings = models.clip.embed_images(clip_batch)
    tags: list[list[dict[str, object]]] = [[] for _ in range(len(clip_batch))]
    calls = 1
    if tagger is not None and tag_batch is not None:
        tags = [[{"name": t.name, "confidence": t.confidence, "category": t.category, "source": "wd14"}
                 for t in found] for found in tagger.tag(tag_batch)]
        calls += 1
    if vocab is not None:
        for mine, found in zip(tags, vocab.tag(embeddings), strict=True):
            have = {str(t["name"]).casefold() for t in mine}
            mine += [t for t in found if t["name"].casefold() not in have]  # WD14's own word wins
    return Inferred(embeddings, tags, calls)


def worker_state(spec: ModelSpec) -> dict[str, Any]:
    """The inference worker's loaded model sessions and its memory (for status)."""
    loaded: list[str] = []
    providers: list[str] = []
    if repr(spec) in _models:
        models = _models[repr(spec)]
        loaded = [str(k[0] if isinstance(k, tuple) else k) for k in models.cache.loaded()]
        providers = models.clip.visual.used
    return {"pid": os.getpid(), "rss": psutil.Process().memory_info().rss, "loaded": loaded, "providers": providers}
