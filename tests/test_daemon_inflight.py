"""The real daemon, a folder renamed while its images are in flight (the acceptance check of issue 16's
first item): 60 images indexed in reduced mode, models added, `pixdex serve` queues them as backfill,
and the folder is renamed while they go through the pipeline. All 60 end at their new paths, with
their ids, sidecars and no failure recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from consistency import check_consistent
from PIL import Image
from served import Served, wait_for

pytestmark = pytest.mark.slow


def test_sixty_images_in_a_folder_renamed_while_in_flight_are_found_at_their_new_paths(
        tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    album = pics / "a"
    album.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for n in range(60):  # big enough that decoding them keeps the pipeline busy for a while
        Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(album / f"img{n:02d}.jpg")
    reduced = Served(tmp_path, tmp_path / "no-models", [pics]).start()
    wait_for(lambda: reduced.idle() and len(reduced.listed()) == 60, timeout=120, what="reduced indexing")
    before = {Path(p).name: i for p, i in reduced.listed().items()}
    reduced.stop()

    daemon = Served(tmp_path, model_dir, [pics]).start()
    try:
        wait_for(lambda: daemon.status()["progress"]["in_flight"] > 0, timeout=60, what="backfill in flight")
        album.rename(pics / "renamed_dir")
        wait_for(lambda: daemon.idle() and all(h["clip_model"] for h in _items(daemon)), timeout=240,
                 what="every image embedded")
        found = daemon.listed()
        assert sorted(found) == sorted(str(pics / "renamed_dir" / name) for name in before)
        assert {Path(p).name: i for p, i in found.items()} == before  # ids kept
        assert daemon.get("/failures") == []
        assert daemon.status()["progress"]["failed"] == 0
    finally:
        daemon.stop()
    check_consistent(daemon.data, pics)


def _items(daemon: Served) -> list[dict[str, object]]:
    return [daemon.get(f"/items/{i}") for i in daemon.listed().values()]
