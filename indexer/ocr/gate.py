"""The optional CLIP gate of the OCR stage (`[ocr] clip_gate`): an image whose CLIP embedding is far from
"text, document, screenshot, sign" is not read at all.

The prompts' text embedding is made once, by the model worker (`gate_vector`); each image's embedding is the one
indexing stored. The similarity is CLIP's cosine, whose scale differs from model to model, so the threshold is
the person's to set for their model: off by default, and never applied with a stand-in CLIP model (random
weights: its similarities mean nothing). Its value — how many photos it spares, how much text it loses — is
unmeasured: it needs a real CLIP model (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from pixdex.indexer.inference import ModelSpec

PROMPTS = ("text", "a document", "a screenshot", "a sign", "a photo of text, a document, a screenshot or a sign")


@dataclass(frozen=True)
class GateVector:
    vector: NDArray[np.float32]  # the unit mean of the prompts' text embeddings
    clip_id: str
    standin: bool  # the CLIP model is a stand-in: the gate stays off


def gate_vector(spec: ModelSpec) -> GateVector:
    """The prompts' text embedding by the configured CLIP model, in the model worker."""
    from pixdex.indexer.inference import loaded_clip  # late: onnxruntime in the model worker only

    clip = loaded_clip(spec)
    mean = clip.embed_texts(list(PROMPTS)).mean(axis=0)
    return GateVector((mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32), clip.id, clip.standin)


@dataclass(frozen=True)
class ClipGate:
    """`passes(embedding)`: (whether the image is read, its similarity to the prompts)."""

    vector: NDArray[np.float32]
    threshold: float

    def passes(self, embedding: NDArray[np.float32] | None) -> tuple[bool, float | None]:
        if embedding is None or len(embedding) != len(self.vector):
            return True, None  # not embedded (yet), or by another model: read it
        norm = float(np.linalg.norm(embedding))
        similarity = float(embedding @ self.vector) / norm if norm > 0 else 0.0
        return similarity >= self.threshold, round(similarity, 4)
