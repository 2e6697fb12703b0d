"""The vector side: text and image queries as one normalised CLIP embedding.

``beach + sunset - people`` embeds each segment and takes (beach + sunset) − people, like rclip;
several query images are averaged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.embedder import ClipModel, normalize_rows
from pixdex.query.parse import Query


def segment_embeddings(clip: ClipModel, query: Query) -> NDArray[np.float32]:
    """One row per segment, positive ones first: one text-tower call for the whole query."""
    return clip.embed_query_texts(list(query.positive) + list(query.negative))


def query_embedding(clip: ClipModel, query: Query, embedded: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    if embedded is None:
        embedded = segment_embeddings(clip, query)
    signs = np.array([1.0] * len(query.positive) + [-1.0] * len(query.negative), dtype=np.float32)
    vector: NDArray[np.float32] = normalize_rows((signs[:, None] * embedded).sum(axis=0, keepdims=True))[0]
    return vector


def mean_embedding(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    mean: NDArray[np.float32] = normalize_rows(normalize_rows(vectors).mean(axis=0, keepdims=True))[0]
    return mean


def combine(text: NDArray[np.float32] | None, images: list[tuple[NDArray[np.float32], float]]) -> NDArray[np.float32]:
    """The text query's embedding plus weighted image embeddings (each normalised first), normalised."""
    parts = ([text] if text is not None else []) + [w * normalize_rows(v[None])[0] for v, w in images]
    combined: NDArray[np.float32] = normalize_rows(np.sum(parts, axis=0, keepdims=True).astype(np.float32))[0]
    return combined
