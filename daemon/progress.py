"""How indexing goes, for `pixdex status` and the STATUS lines: the rate of finished files over the last
minute, the time the queue would take at that rate, and the pipeline's counters."""

from __future__ import annotations

import time
from typing import Any

from pixdex.indexer.stages.stats import Stats


def progress_of(stats: Stats | None, samples: list[tuple[float, int]], queued: int, inflight: int
                ) -> dict[str, Any]:
    """Files per second over the last minute — from when work began in it, so a burst after an idle spell is
    not averaged with the idle time — and the time the queue would take at that rate, with the counters."""
    rate = files_per_second(samples, time.monotonic())
    eta = queued / rate if rate > 0 and queued else None
    counters = {"committed": 0, "failed": 0, "decoded": 0, "inference_calls": 0, "unchanged_content": 0,
                "sidecars_read": 0, "from_sidecars": 0, "sidecar_failures": 0}
    if stats is not None:
        counters = {"committed": stats.committed, "failed": stats.failed, "decoded": stats.decoded,
                    "inference_calls": stats.inference_calls, "unchanged_content": stats.touched,
                    "sidecars_read": stats.sidecars_read, "from_sidecars": stats.from_sidecars,
                    "sidecar_failures": stats.sidecar_failures}
    return {"rate": round(rate, 2), "eta_seconds": round(eta) if eta is not None else None,
            "current": dict(stats.at) if stats and inflight else {},
            "last_committed": stats.current if stats else "", **counters, "in_flight": inflight}


def files_per_second(samples: list[tuple[float, int]], now: float, window: float = 60.0) -> float:
    """The rate of (time, files finished so far) samples over the last `window` seconds, counted from the
    last sample before the count began to move (a burst after an idle spell is not diluted by it)."""
    recent = [(t, n) for t, n in samples if now - t <= window]
    start = 0
    while start + 2 < len(recent) and recent[start + 1][1] == recent[start][1]:
        start += 1
    recent = recent[start:]
    if len(recent) < 2 or recent[-1][0] <= recent[0][0]:
        return 0.0
    return max(0.0, (recent[-1][1] - recent[0][1]) / max(1.0, recent[-1][0] - recent[0][0]))
