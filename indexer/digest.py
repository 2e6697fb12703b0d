"""Content hashes: what tells one file's content from another's (BLAKE2b, 16 bytes, as hex).

The catalog keys known content by it (`images.hash`): a file whose hash is unchanged is not decoded
again, a file that moved is found by it, and a sidecar's embedding names the content it was made from.
"""

from __future__ import annotations

import hashlib


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_file(path: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
