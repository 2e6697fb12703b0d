"""The perceptual hashes of an image's pixels, for finding copies and near-copies (`query.duplicates`): imagehash's
DCT hash (pHash: greyscale → 2-D DCT → the lowest frequencies above their median) at two sizes, stored together
as 40 bytes — 8 for the 64-bit hash (8×8 frequencies), which `query.duplicates` compares across every pair to find
candidates, then 32 for the 256-bit one (16×16), which confirms them. A resize, a re-encode or a format change
moves a few bits, a crop of 3% a side up to a fifth of them; two different photos differ in about half.

Beside the bits, how much `detail` they carry: a bit says something about the picture only where its frequency
stands out of the noise. A flat image (a blank frame, a lens-cap shot), a smooth gradient or a bare horizon has
almost every frequency at zero, so its hash is the same for every such image whatever its colours or direction
(a trial grouped flat red, flat blue, a gradient and that gradient turned 180° as "copies"); `query.duplicates`
leaves those out of the comparison.

Computed in the decode worker from the image `decode` already made (no second decode), or by the backfill of
rows indexed before hashes existed (`phash_file`)."""

from __future__ import annotations

import os

import imagehash
import numpy as np
from PIL import Image
from scipy.fft import dctn

from pixdex.indexer.catalog.phashes import HASH_BYTES, Phash
from pixdex.indexer.decode import decode_image
from pixdex.indexer.digest import content_hash
from pixdex.indexer.files import read_regular

DECODE_SIDE = 64  # the hash looks at 64×64 pixels: a draft decode this small is plenty
DCT_SIDE, LOW = 64, 16  # the 256-bit hash: the 16×16 lowest frequencies of the image at 64×64 (imagehash's phash)
NOISE = 2.0  # grey levels: a frequency this close to the median is decided by noise (a re-encode can flip its bit)


def perceptual_hash(image: Image.Image) -> Phash:
    """The 64-bit and the 256-bit DCT hashes of `image` (any mode), as 8 + 32 bytes, and their detail."""
    grey = image.convert("L")  # once, for both
    packed = b"".join(bytes(np.packbits(np.asarray(imagehash.phash(grey, hash_size=size).hash, dtype=np.uint8).ravel()))
                    for size in (8, 16))
    assert len(packed) == HASH_BYTES
    return Phash(packed, detail(grey))


def detail(grey: Image.Image) -> int:
    """How many of the 255 frequencies behind the 256-bit hash (the mean left out) stand more than NOISE grey levels
    from their median — the bits that say something about the picture. A flat image has none, a smooth gradient or
    a bare horizon 8 to 16, a photo 150 to 250 (dark, foggy or blurred ones included)."""
    pixels = np.asarray(grey.resize((DCT_SIDE, DCT_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = np.asarray(dctn(pixels, norm="ortho"), dtype=np.float64)[:LOW, :LOW]  # in grey levels
    apart = np.abs(low - np.median(low)) > NOISE
    apart[0, 0] = False  # the mean brightness: the same bit in nearly every hash
    return int(np.count_nonzero(apart))


def phash_file(path: bytes, max_pixels: int) -> tuple[str, Phash]:
    """The content hash and perceptual hash of the file at `path` (in a decode worker, for the backfill). Raises
    ReadError (or OSError) naming the file."""
    data, _st = read_regular(path)
    decoded = decode_image(data, os.fsdecode(path), DECODE_SIDE, max_pixels)
    return content_hash(data), perceptual_hash(decoded.image)
