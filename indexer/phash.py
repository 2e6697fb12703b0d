"""The perceptual hashes of an image's pixels, for finding copies and near-copies (`query.duplicates`): imagehash's
DCT hash (pHash: greyscale → 2-D DCT → the lowest frequencies above their median) at two sizes, stored together
as 40 bytes — 8 for the 64-bit hash (8×8 frequencies), which `query.duplicates` compares across every pair to find
candidates, then 32 for the 256-bit one (16×16), which confirms them. A resize, a re-encode or a format change
moves a few bits, a crop of 3% a side up to a fifth of them; two different photos differ in about half.

Computed in the decode worker from the image `decode` already made (no second decode), or by the backfill of
rows indexed before hashes existed (`phash_file`)."""

from __future__ import annotations

import os

import imagehash
import numpy as np
from PIL import Image

from pixdex.indexer.catalog.phashes import HASH_BYTES
from pixdex.indexer.decode import decode_image
from pixdex.indexer.digest import content_hash
from pixdex.indexer.files import read_regular

DECODE_SIDE = 64  # the hash looks at 32×32 pixels: a draft decode this small is plenty


def perceptual_hash(image: Image.Image) -> bytes:
    """The 64-bit and the 256-bit DCT hashes of `image` (any mode), as 8 + 32 bytes."""
    grey = image.convert("L")  # once, for both
    packed = b"".join(bytes(np.packbits(np.asarray(imagehash.phash(grey, hash_size=size).hash, dtype=np.uint8).ravel()))
                    for size in (8, 16))
    assert len(packed) == HASH_BYTES
    return packed


def phash_file(path: bytes, max_pixels: int) -> tuple[str, bytes]:
    """The content hash and perceptual hash of the file at `path` (in a decode worker, for the backfill). Raises
    ReadError (or OSError) naming the file."""
    data, _st = read_regular(path)
    decoded = decode_image(data, os.fsdecode(path), DECODE_SIDE, max_pixels)
    return content_hash(data), perceptual_hash(decoded.image)
