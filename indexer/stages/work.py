"""What travels down the pipeline's queues: one `Work` per queue entry, grouped into batches from `batch` on;
`STOP` passed along when the pipeline stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from pixdex.indexer.catalog.rows import QueueEntry
from pixdex.indexer.prepare import Prepared
from pixdex.indexer.sidecars.state import SidecarState

STOP = object()  # passed down the stages when the pipeline stops


@dataclass
class Work:
    """One queue entry on its way through the stages."""

    entry: QueueEntry
    prepared: Prepared | None = None
    error: str | None = None
    embedding: NDArray[np.float32] | None = None
    tags: list[dict[str, object]] = field(default_factory=list)
    side: SidecarState | None = None
    vanished: bool = False  # the file was not at the path we had: moved or deleted meanwhile
    moved: bool = False  # it left its path after it was read (before its sidecar was written)
    parked: bool = False  # it vanished or moved: nothing committed, the entry stays queued (`parking`)

    @property
    def needs_model(self) -> bool:
        return self.error is None and self.prepared is not None and self.prepared.clip_input is not None

    def model_input(self, model: Literal["clip", "tagger"]) -> NDArray[np.float32]:
        """The image as `model` takes it (for work that `needs_model`)."""
        prepared = self.prepared
        assert prepared is not None
        array = prepared.clip_input if model == "clip" else prepared.tag_input
        assert array is not None, f"{model} input of {self.entry.row.path!r}"
        return array
