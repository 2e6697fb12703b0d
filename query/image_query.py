"""A query by an image file that is not indexed (`pixdex similar PATH` without a daemon): read, decoded and
embedded here, by the query's own CLIP model. The daemon never decodes in the serving process (uploads go to the
indexing process's decode pool), so only the command line hands this to `SearchService`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.decode import decode_image
from pixdex.indexer.errors import ReadError
from pixdex.indexer.files import read_regular
from pixdex.indexer.settings import Config


def embed_file(config: Config, clip: Any, path: Path) -> NDArray[np.float32]:
    """The embedding of the image at `path` by `clip`; ReadError naming the file when it cannot be read."""
    try:
        data, _ = read_regular(os.fsencode(path), config.decode.max_megabytes << 20)
    except OSError as exc:
        raise ReadError(path, f"cannot read query image: {exc.strerror or exc}") from exc
    decoded = decode_image(data, str(path), clip.image_size, config.decode.max_pixels)
    embedding: NDArray[np.float32] = clip.embed_images(clip.preprocess(decoded.image)[None])[0]
    return embedding
