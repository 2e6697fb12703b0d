"""The pipeline's counters: what was decoded, embedded, committed, failed, and the time each stage took."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Stats:
    decoded: int = 0
    embedded: int = 0
    tagged: int = 0
    inference_calls: int = 0
    committed: int = 0
    touched: int = 0  # a new stat, the same content
    sidecars_read: int = 0  # only the sidecar changed: re-read, no decode, no model
    from_sidecars: int = 0  # embedding and keywords taken from the image's sidecar: no decode, no model
    failed: int = 0
    hashed: int = 0  # perceptual hashes filled in for images indexed before (`phash_backfill`): no model
    failures: list[tuple[str, str]] = field(default_factory=list)
    sidecar_failures: int = 0
    sidecar_errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    current: str = ""
    at: dict[str, str] = field(default_factory=dict)  # stage → the file it last took
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_time(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
