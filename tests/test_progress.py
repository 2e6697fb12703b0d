"""The rate and ETA `pixdex status` shows: over the last minute, from when the work began in it."""

from __future__ import annotations

import pytest

from pixdex.daemon.progress import files_per_second


def test_a_burst_after_an_idle_spell_is_not_averaged_with_the_idle_time() -> None:
    idle = [(t * 0.5, 0) for t in range(100)]  # 50 s with nothing finished
    burst = [(50 + t * 0.5, 40 * (t + 1)) for t in range(6)]  # then 240 files in 3 s
    assert files_per_second(idle + burst, now=52.5) == pytest.approx(240 / 3, rel=0.05)


def test_steady_work_idle_machines_and_old_samples() -> None:
    steady = [(t * 1.0, t * 5) for t in range(120)]
    assert files_per_second(steady, now=119) == pytest.approx(5.0)  # the last minute only
    assert files_per_second([(t * 1.0, 7) for t in range(30)], now=30) == 0.0
    assert files_per_second([], now=1) == 0.0 and files_per_second([(0.0, 3)], now=1) == 0.0
    assert files_per_second([(0.0, 0), (0.1, 50)], now=0.1) == 50.0  # a span under a second counts as one
