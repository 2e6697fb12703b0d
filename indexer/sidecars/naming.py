"""Which file is an image's sidecar.

- ``IMG.jpg.xmp`` (darktable, digiKam, Immich) or ``IMG.xmp`` (Adobe, Capture One). An existing one of
  either name is the sidecar, in any case: cameras and Windows tools write ``IMG.XMP`` (and
  ``IMG.JPG.XMP``), and a second file beside it would clash on a case-insensitive filesystem. An exact
  match wins over a case variant; a case variant is taken only while no other image of the folder has
  the same name but for case (``a.jpg`` and ``A.JPG`` both present: each has only its exact one).
- ``IMG.xmp`` is shared by a stem: it belongs to an image only while no other image or RAW file of the
  folder has that stem (compared without case). With a RAW it is the RAW's (Lightroom; darktable names
  its own ``IMG.CR2.xmp``), and a JPEG or TIFF beside it gets ``IMG.JPG.xmp``. Files that are neither
  (``IMG.txt``, a Live Photo's ``IMG.MOV``) do not count.
- A new sidecar is ``IMG.jpg.xmp``; with ``[sidecar] naming = "image.xmp"``, ``IMG.xmp`` while the stem is
  the image's alone.

Names are bytes (any file name works); case is folded for ASCII letters only, as the filesystems that
fold case do for the names cameras write.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pixdex.indexer.decode import EXTENSIONS

RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf",
                            ".rw2", ".rwl", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".mrw", ".kdc", ".dcr",
                            ".mos", ".raw"})
SUFFIX = b".xmp"


def _extension(name: bytes) -> str:
    return os.path.splitext(name)[1].decode("ascii", "ignore").lower()


def is_raw_name(name: bytes) -> bool:
    return _extension(name) in RAW_EXTENSIONS


def shares_sidecars(name: bytes) -> bool:
    """Whether a file with this name competes for an ``IMG.xmp``: images pixdex reads, and RAW files."""
    return _extension(name) in EXTENSIONS or is_raw_name(name)


def is_sidecar_name(name: bytes) -> bool:
    return name.lower().endswith(SUFFIX)


@dataclass(frozen=True)
class Siblings:
    """A folder's names as the sidecar rules look at them: each name by its lower case, and how many images
    and RAW files compete for each (lower-case) stem."""

    by_lower: dict[bytes, list[bytes]]
    stems: Counter[bytes]

    def named(self, name: bytes, names: set[bytes]) -> bytes | None:
        """`name` as it is in the folder: exactly, else its one case variant (None: absent, or ambiguous)."""
        if name in names:
            return name
        variants = self.by_lower.get(name.lower(), [])
        return variants[0] if len(variants) == 1 else None


def siblings(names: Iterable[bytes]) -> Siblings:
    by_lower: dict[bytes, list[bytes]] = {}
    stems: Counter[bytes] = Counter()
    for name in names:
        by_lower.setdefault(name.lower(), []).append(name)
        if shares_sidecars(name):
            stems[os.path.splitext(name)[0].lower()] += 1
    return Siblings(by_lower, stems)


def folder_names(folder: bytes) -> set[bytes]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def stem_is_shared(image_name: bytes, names: set[bytes], found: Siblings) -> bool:
    """Whether another image or RAW file in the folder has the image's stem (the image itself may be gone)."""
    stem = os.path.splitext(image_name)[0].lower()
    return found.stems[stem] - (image_name in names and shares_sidecars(image_name)) > 0


def _case_twins(image_name: bytes, found: Siblings) -> bool:
    """Whether the folder holds another name equal to the image's but for case (``a.jpg`` and ``A.JPG``)."""
    return len(found.by_lower.get(image_name.lower(), [])) > 1


def sidecar_name_of(image_name: bytes, names: set[bytes], found: Siblings) -> bytes | None:
    """The name of an image's existing sidecar among a folder's `names` (None: it has none)."""
    long = image_name + SUFFIX
    if long in names:
        return long
    twins = _case_twins(image_name, found)
    if not twins and (variant := found.named(long, names)) is not None:
        return variant
    stem = os.path.splitext(image_name)[0]
    if not stem or stem_is_shared(image_name, names, found):
        return None
    short = stem + SUFFIX
    return short if short in names else None if twins else found.named(short, names)


def stem_sidecar_name(image_name: bytes, names: set[bytes], found: Siblings) -> bytes | None:
    """The ``IMG.xmp`` (any case) that has the image's stem, whoever it belongs to now."""
    stem = os.path.splitext(image_name)[0]
    return found.named(stem + SUFFIX, names) if stem else None


def sidecar_path(image: Path, naming: str = "image.ext.xmp") -> Path:
    """The sidecar of `image`: the existing one (see the module's rules), else the name a new one gets."""
    long = image.with_name(image.name + ".xmp")
    if os.path.lexists(long):
        return long  # the common case, without listing the folder
    name = os.fsencode(image.name)
    names = folder_names(os.fsencode(image.parent))
    found = siblings(names)
    existing = sidecar_name_of(name, names, found)
    if existing is not None:
        return image.with_name(os.fsdecode(existing))
    stem = os.path.splitext(image.name)[0]
    if naming == "image.xmp" and stem and os.path.splitext(image.name)[1] and not stem_is_shared(name, names, found):
        return image.with_name(stem + ".xmp")
    return long


def moved_sidecar_path(old_image: Path, old_sidecar: Path, new_image: Path) -> Path:
    """Where an image's sidecar goes when the image moves: the same style (``IMG.jpg.xmp`` or ``IMG.xmp``,
    the suffix's case kept) while the destination's stem is free for it, else ``IMG.jpg.xmp``."""
    suffix = old_sidecar.name[-len(SUFFIX):]
    long = new_image.with_name(new_image.name + suffix)
    if old_sidecar.name.lower() == (old_image.name + ".xmp").lower():
        return long
    stem = os.path.splitext(new_image.name)[0]
    names = folder_names(os.fsencode(new_image.parent))
    if stem and not stem_is_shared(os.fsencode(new_image.name), names, siblings(names)):
        return new_image.with_name(stem + suffix)  # an IMG.xmp stays an IMG.xmp
    return long
