"""Embeddings that travel with the photo: the CLIP vector in the sidecar, checked on the way back in.

``pixdex:Embedding`` holds ``f16:<dim>:<first 16 hex of sha256 of the f16 bytes>:<base64 of the f16 bytes,
little-endian>``, beside the model that made it (``pixdex:EmbeddingModel``) and the content it was made from
(``pixdex:EmbeddingOf``): a library copied elsewhere, or rebuilt, is searchable without running the model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import numpy as np

from pixdex.indexer.sidecars.keys import EMBEDDING, EMBEDDING_MODEL, EMBEDDING_OF


def encode_embedding(vector: Any) -> str:
    """``f16:<dim>:<first 16 hex of sha256 of the f16 bytes>:<base64 of the f16 bytes, little-endian>``."""
    raw = np.asarray(vector, dtype="<f2").reshape(-1).tobytes()
    return f"f16:{len(raw) // 2}:{hashlib.sha256(raw).hexdigest()[:16]}:{base64.b64encode(raw).decode()}"


def read_embedding(xmp: dict[str, Any], model_id: str, content_hash: str) -> Any:
    """The embedding a sidecar holds for `model_id` and the image content `content_hash` (float32, unit
    length), or None: absent, of another model or another content, or failing its checksum."""
    if not model_id or str(xmp.get(EMBEDDING_MODEL) or "") != model_id:
        return None
    if str(xmp.get(EMBEDDING_OF) or "") != content_hash:
        return None
    try:  # anything malformed is no embedding (the image is then embedded by the model), never an error
        dtype, dim, checksum, payload = str(xmp.get(EMBEDDING) or "").split(":", 3)
        raw = base64.b64decode(payload, validate=True)
        if dtype != "f16" or len(raw) != 2 * int(dim) or hashlib.sha256(raw).hexdigest()[:16] != checksum:
            return None
    except (ValueError, binascii.Error):
        return None
    vector = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 and np.isfinite(norm) else None
