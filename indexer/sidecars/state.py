"""What the index knows of an image's sidecar: the version read (or written) and what it says.

A sidecar's version is its inode, size, mtime and mode (`sidecar_version`): the catalog stores the one it
read (`images.side`), and the scanner queues a sidecar whose version differs — unless pixdex wrote it itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SidecarState:
    """What the index needs from an image's sidecar, after pixdex read (and maybe wrote) it."""

    path: bytes | None = None  # None: the image has no sidecar
    signature: str | None = None  # inode:size:mtime of the version read or written (the scanner's view)
    readable: bool = False
    person: list[dict[str, str]] = field(default_factory=list)  # {"name": leaf, "path": "A|B"}
    rejected: list[str] = field(default_factory=list)
    text: str = ""  # keywords, title, description, … for the text index
    error: str | None = None  # why pixdex did not write it (it may still have been read)
    rating: int | None = None
    description: str = ""  # dc:description (x-default), as the sidecar says it
    # When pixdex wrote the keywords into the image itself ([sidecar] embedded): its new stat
    # (dev, inode, size, mtime) and content hash, so the index records them and does not redo the image.
    image_stat: tuple[int, int, int, int] | None = None
    image_digest: str | None = None
    digest: str | None = None  # BLAKE2b of the sidecar's bytes as read (or written)
    lat: float | None = None  # the sidecar's XMP GPS position (a geotagging tool's), degrees
    lon: float | None = None
    location: dict[str, str] = field(default_factory=dict)  # the person's own location fields (`location`)
    place: dict[str, str] | None = None  # GeoNames' place of the image's position; None: not looked up
    label: str = ""  # xmp:Label, the colour label


def sidecar_version(path: bytes | str | os.PathLike[str]) -> str | None:
    """What tells one version of a sidecar from another, as the catalog stores it (`images.side`):
    inode:size:mtime:mode (a chmod counts: a sidecar made writable may now be written). None: absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode:o}"
