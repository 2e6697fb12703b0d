"""What the catalog holds, as Python values: a file's stat, an image's row, a queue entry, a stored vector.

Paths are bytes, so names that are not valid UTF-8 are kept exactly. Queue priorities, most urgent first:
`ASKED` (a person asked), `CHANGED` (new or changed files), `BACKFILL` (work the models owe).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where vectors are touched (late, below): `status` and `failures` stay light
    import numpy as np
    from numpy.typing import NDArray

ASKED, CHANGED, BACKFILL = 0, 1, 2
PRIORITY_NAMES = {ASKED: "asked", CHANGED: "new/changed", BACKFILL: "backfill"}

INT64_MAX = 2**63 - 1


def clamp_ns(value: int) -> int:
    """File times past 2262 or before 1677 do not fit SQLite's integers: keep them at the edge."""
    return max(-INT64_MAX - 1, min(INT64_MAX, value))


@dataclass(frozen=True)
class FileStat:
    path: bytes
    dev: int
    ino: int
    size: int
    mtime_ns: int
    side: str | None = field(default=None, compare=False)  # its sidecar's version, as the scanner saw it

    @classmethod
    def of(cls, path: bytes, st: os.stat_result, side: str | None = None) -> FileStat:
        return cls(path, st.st_dev, st.st_ino, st.st_size, clamp_ns(st.st_mtime_ns), side)

    @property
    def fspath(self) -> Path:
        return Path(os.fsdecode(self.path))


@dataclass(frozen=True)
class ImageRow:
    id: int
    path: bytes
    dev: int
    ino: int
    size: int
    mtime_ns: int
    hash: str | None
    state: str
    reason: str | None
    clip_model: str | None
    tagger_model: str | None
    width: int | None
    height: int | None
    taken: str | None
    camera: str | None
    tags: str
    metadata: str
    sidecar_error: str | None
    created: float
    updated: float
    gen: int
    side: str | None = None
    rejected: str = "[]"
    embedded: str = "{}"
    facts: str = "{}"
    side_hash: str | None = None  # BLAKE2b of the sidecar's bytes as last read
    described: str | None = None  # the describer id ([describe] model + prompt) of `llm`
    llm: str = "{}"  # the vision LLM's answer: description, keywords, text
    describe_error: str | None = None
    ocr: str = "{}"  # the OCR model's reading: text (lines), lines
    ocr_by: str | None = None  # the reader id ([ocr] settings + model) that made `ocr`
    ocr_error: str | None = None

    @property
    def ocr_text(self) -> str:
        return str(json.loads(self.ocr).get("text") or "")

    @property
    def llm_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.llm))

    @property
    def fact_dict(self) -> dict[str, object]:
        return dict(json.loads(self.facts))

    @property
    def fspath(self) -> Path:
        return Path(os.fsdecode(self.path))

    @property
    def stat(self) -> FileStat:
        return FileStat(self.path, self.dev, self.ino, self.size, self.mtime_ns)

    @property
    def tag_list(self) -> list[dict[str, object]]:
        return list(json.loads(self.tags))

    @property
    def machine_tags(self) -> list[dict[str, object]]:
        """The models' keywords (a person's keywords, from the sidecar or the image, carry category "person")."""
        return [t for t in self.tag_list if t.get("category") != "person"]

    @property
    def rejected_list(self) -> list[str]:
        return list(json.loads(self.rejected))

    def current_for(self, models: tuple[str, str | None]) -> bool:
        """Indexed as these models would index it. Without models (reduced mode, `models[0]` empty) any
        finished row is as current as it can get: what models made stays until models are back."""
        if self.state != "done":
            return False
        return not models[0] or (self.clip_model, self.tagger_model) == models

    @property
    def waits_for_models(self) -> bool:
        return self.state == "done" and self.clip_model is None

    def same_file(self, st: FileStat) -> bool:
        return (self.size, self.mtime_ns) == (st.size, st.mtime_ns)


@dataclass(frozen=True)
class QueueEntry:
    row: ImageRow
    priority: int
    seq: int
    reason: str


COLUMNS = ", ".join(f"images.{name}" for name in ImageRow.__dataclass_fields__)


def vector_blob(vector: NDArray[np.float32]) -> bytes:
    """A vector as the catalog stores it: half precision (catalog schema 10)."""
    import numpy as np  # late: the command line's client path reads rows and stays without numpy

    return np.ascontiguousarray(vector, dtype="<f2").tobytes()


def blob_vector(blob: bytes) -> NDArray[np.float32]:
    import numpy as np  # late: the command line's client path reads rows and stays without numpy

    return np.frombuffer(blob, dtype="<f2").astype(np.float32)


BLOB_BYTES = 2  # per dimension


def f32_to_f16(blob: bytes) -> bytes:
    """A float32 vector stored before catalog schema 10, as it is stored now."""
    import numpy as np  # late: only a migration calls it

    return vector_blob(np.frombuffer(blob, dtype="<f4"))
