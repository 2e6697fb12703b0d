"""Zero-shot tags from the CLIP embedding pixdex computes anyway: one matrix product per image.

The vocabulary is `vocabulary.txt` (shipped, a couple of thousand everyday photo concepts) plus the
person's own files (`[clip_tags] vocabulary_extra`), minus `exclude`. Each concept's text embedding
is the normalised mean over the prompt templates (CLIP's prompt ensembling), computed once per
model and vocabulary by the model worker and cached as a .npy file under the cache directory; the
serving process reads the same file for related-tag search.

The threshold is calibrated against the vocabulary, not a raw cosine (whose scale differs from model
to model): for each image, every concept's cosine is standardised against that image's cosines to
the whole vocabulary, z = (s - mean) / std, and a concept is a tag when z ≥ `min_sigma` — "this
many standard deviations closer than a typical concept". The confidence stored is CLIP's own
zero-shot probability of the concept among the whole vocabulary (softmax at CLIP's temperature).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import unicodedata
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.errors import ModelError
from pixdex.indexer.files import atomic_write

if TYPE_CHECKING:
    from pixdex.indexer.embedder import ClipModel
    from pixdex.indexer.sections import ClipTagSettings

log = logging.getLogger(__name__)

BATCH = 128
LOGIT_SCALE = 100.0  # CLIP's learned temperature (OpenAI's and open_clip's models end near 100)


@functools.cache
def shipped_vocabulary() -> str:
    """The vocabulary shipped with pixdex, read once per process (the daemon reads it at start: a reinstall
    under a running daemon removes the file)."""
    return resources.files("pixdex.indexer").joinpath("vocabulary.txt").read_text(encoding="utf-8")


def parse_vocabulary(text: str) -> list[str]:
    """Concepts, one per line; `#` lines and blank lines skipped; whitespace collapsed."""
    return [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _key(concept: str) -> str:
    return unicodedata.normalize("NFC", concept).casefold()


def vocabulary(settings: ClipTagSettings) -> list[str]:
    """The shipped concepts, then each extra file's, without repeats (case and Unicode form ignored) and
    without the excluded ones. A missing or unreadable extra file is skipped with a warning naming it."""
    concepts = parse_vocabulary(shipped_vocabulary())
    for extra in settings.vocabulary_extra:
        path = Path(os.path.expanduser(extra))
        try:
            concepts += parse_vocabulary(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:  # tagging goes on with the rest of the vocabulary
            log.warning("%s: cannot read this [clip_tags] vocabulary_extra file (%s); tagging without it — fix "
                        "or remove it from the config", path, exc)
    excluded = {_key(e) for e in settings.exclude}
    seen: set[str] = set()
    out = []
    for concept in concepts:
        key = _key(concept)
        if key not in seen and key not in excluded:
            seen.add(key)
            out.append(concept)
    return out


def vocabulary_id(clip_id: str, concepts: list[str], templates: list[str]) -> str:
    digest = hashlib.sha256("\n".join([clip_id, *templates, "", *concepts]).encode()).hexdigest()
    return digest[:16]


def concept_matrix(clip: ClipModel, concepts: list[str], templates: list[str], cache_dir: Path) -> NDArray[np.float32]:
    """(len(concepts), dim) unit rows: each concept's prompt-ensembled text embedding, from the cache
    when this model, vocabulary and templates were embedded before."""
    path = cache_path(cache_dir, clip.id, concepts, templates)
    cached = load_matrix(path, len(concepts), clip.dim)
    if cached is not None:
        return cached
    log.info("embedding the CLIP tag vocabulary: %d concepts × %d templates (once per model)", len(concepts),
             len(templates))
    total = np.zeros((len(concepts), clip.dim), np.float32)
    for template in templates:
        prompts = [template.format(c) for c in concepts]
        for start in range(0, len(prompts), BATCH):
            total[start:start + BATCH] += clip.embed_texts(prompts[start:start + BATCH])
    matrix: NDArray[np.float32] = (total / np.linalg.norm(total, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)
    _save(path, matrix)
    return matrix


def cache_path(cache_dir: Path, clip_id: str, concepts: list[str], templates: list[str]) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in clip_id)
    return cache_dir / f"{safe}-{vocabulary_id(clip_id, concepts, templates)}.npy"


def load_matrix(path: Path, rows: int, dim: int) -> NDArray[np.float32] | None:
    try:
        matrix: NDArray[np.float32] = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if matrix.shape != (rows, dim) or matrix.dtype != np.float32 or not np.isfinite(matrix).all():
        log.warning("%s: a vocabulary cache of the wrong shape; embedding the vocabulary again", path)
        return None
    return matrix


def _save(path: Path, matrix: NDArray[np.float32]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = io.BytesIO()
    np.save(out, matrix, allow_pickle=False)
    atomic_write(path, out.getvalue())


class ClipTagger:
    """Tags for a batch of CLIP image embeddings, from the vocabulary's matrix."""

    def __init__(self, clip: ClipModel, settings: ClipTagSettings, cache_dir: Path) -> None:
        self.clip = clip
        self.settings = settings
        self.cache_dir = cache_dir
        self.concepts = vocabulary(settings)
        if not self.concepts:
            raise ModelError("the CLIP tag vocabulary is empty (everything excluded?); check [clip_tags]")
        self._matrix: NDArray[np.float32] | None = None

    @property
    def id(self) -> str:
        """Changes with the model, the vocabulary, the templates and the selection settings: images tagged
        under another id are tagged again."""
        s = self.settings
        return (f"clip-vocab@{vocabulary_id(self.clip.id, self.concepts, list(s.templates))}"
                f":{s.min_sigma:g}:{s.max_tags}")

    @property
    def matrix(self) -> NDArray[np.float32]:
        if self._matrix is None:
            self._matrix = concept_matrix(self.clip, self.concepts, list(self.settings.templates), self.cache_dir)
        return self._matrix

    def tag(self, embeddings: NDArray[np.float32]) -> list[list[dict[str, Any]]]:
        return [select(row, self.concepts, self.settings.min_sigma, self.settings.max_tags)
                for row in embeddings @ self.matrix.T]


def select(similarities: NDArray[np.float32], concepts: list[str], min_sigma: float, max_tags: int
           ) -> list[dict[str, Any]]:
    """The concepts at least `min_sigma` standard deviations above this image's mean similarity to the
    vocabulary, best first, at most `max_tags`. Their confidence is CLIP's zero-shot probability over the
    whole vocabulary (softmax at CLIP's temperature); `sigma` is the z-score the cut was made on."""
    mean, std = float(similarities.mean()), float(similarities.std())
    if std <= 1e-9:
        return []
    z = (similarities - mean) / std
    logits = LOGIT_SCALE * (similarities - similarities.max())
    probability = np.exp(logits) / np.exp(logits).sum()
    order = np.argsort(-z)[:max_tags]
    return [{"name": concepts[i], "confidence": round(float(probability[i]), 4), "category": "general",
             "source": "clip", "sigma": round(float(z[i]), 2)}
            for i in order if z[i] >= min_sigma]
