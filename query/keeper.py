"""Which copy of a photo to keep (`choose`), and why: the most pixels, then the original format (a camera's RAW,
HEIC or JPEG before a PNG or WebP made from it), then the oldest file, then the one a person rated or gave
keywords; then the shorter name (a copy's gets " copy", " (2)"…) and the path, so the choice is stable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

from pixdex.indexer.catalog.rows import ImageRow

RAW = {"arw", "cr2", "cr3", "dng", "nef", "nrw", "orf", "pef", "raf", "rw2", "srw", "x3f"}
FORMAT_RANK = {**dict.fromkeys(RAW, 0), "heic": 1, "heif": 1, "jpg": 2, "jpeg": 2, "tif": 3, "tiff": 3}
OTHER_FORMAT = 4  # PNG, WebP, GIF, BMP…: what exports and conversions write


@dataclass(frozen=True)
class Copy:
    """One image of a group, as the keeper's choice sees it."""

    row: ImageRow

    @property
    def pixels(self) -> int:
        return (self.row.width or 0) * (self.row.height or 0)

    @property
    def ext(self) -> str:
        return os.path.splitext(os.fsdecode(self.row.path))[1].lstrip(".").lower()

    @property
    def format_rank(self) -> int:
        return FORMAT_RANK.get(self.ext, OTHER_FORMAT)

    @property
    def curated(self) -> bool:
        """A person rated it or gave it keywords."""
        rated = self.row.fact_dict.get("rating") not in (None, 0)
        return rated or any(t.get("category") == "person" for t in self.row.tag_list)

    def key(self) -> tuple[int, int, int, int, int, bytes]:
        name = os.path.basename(self.row.path)  # a copy's name is usually the longer ("IMG_1 copy", "IMG_1 (2)")
        return (-self.pixels, self.format_rank, self.row.mtime_ns, 0 if self.curated else 1, len(name), self.row.path)


def choose(rows: list[ImageRow]) -> tuple[ImageRow, str]:
    """The copy to keep of `rows` (two or more), and why, in a few words."""
    copies = sorted((Copy(r) for r in rows), key=Copy.key)
    best, rest = copies[0], copies[1:]
    if any(c.pixels < best.pixels for c in rest):
        return best.row, f"the most pixels ({best.row.width}×{best.row.height})"
    if any(c.format_rank > best.format_rank for c in rest):
        return best.row, f"the original format ({best.ext.upper()}), the others were converted"
    if any(c.row.mtime_ns > best.row.mtime_ns for c in rest):
        when = datetime.fromtimestamp(best.row.mtime_ns / 1e9, tz=UTC).date().isoformat()
        return best.row, f"the oldest file ({when}), the others came later"
    if best.curated and not all(c.curated for c in rest):
        return best.row, "you rated it or gave it keywords"
    return best.row, "all alike: the shortest name"
