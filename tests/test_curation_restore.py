"""Restore from the trash through the real daemon: an item sent to the freedesktop trash (`POST /items/{id}/trash`,
send2trash) and brought back as a file manager's "Restore" does — each file moved back and its `.trashinfo`
removed, one after the other with the watcher's scans in between — gets its id back in either order. The image
first is indexed at once under a new id with a new sidecar, which the restored one replaces (the file manager's
"Replace"); then it takes its id back. The sidecar first, pixdex's alone, is not taken for an orphan and removed."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from photos import scene
from served import Served, wait_for

pytestmark = pytest.mark.slow

NAMES = [f"shot{n}.jpg" for n in range(4)]


@pytest.fixture(scope="module", params=["models", "no models"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           model_dir: Path) -> Iterator[Served]:
    """With the models; and without (reduced mode: no embedding in the sidecar — a person's edit carries the id,
    which a trial found missing)."""
    root = tmp_path_factory.mktemp("restore")
    if request.param == "no models":
        model_dir = root / "no-models"
        model_dir.mkdir()
    pics = root / "pics"
    pics.mkdir()
    for n, name in enumerate(NAMES):
        scene(300 + n).save(pics / name, quality=90)
    # The vector file is not saved meanwhile: the trashed ids' tombstones stay (a restore soon after the trash).
    daemon = Served(root, model_dir, [pics], extra="[index]\nsave_seconds = 600\n")
    daemon.environ["HOME"] = str(root)  # the trash is $XDG_DATA_HOME/Trash on the home's filesystem
    daemon.start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == len(NAMES), timeout=120, what="the library")
    if request.param == "models":
        wait_for(lambda: all((pics / f"{n}.xmp").is_file() for n in NAMES), what="the sidecars")
    yield daemon
    daemon.stop()


def trash(served: Served, image: Path) -> int:
    image_id = served.listed()[str(image)]
    full = {"Host": "127.0.0.1", "Authorization": f"Bearer {served.token()}"}
    status, body = served.raw("POST", f"/items/{image_id}/trash", full, tcp=True)
    assert status == 200, body
    assert not image.exists() and image_id not in served.listed().values()
    return image_id


def restore(served: Served, name: str) -> Path:
    """The file manager's "Restore" of one file: back where it was, its .trashinfo gone."""
    trash = served.root / "data" / "Trash"
    shutil.move(trash / "files" / name, served.folders[0] / name)
    (trash / "info" / f"{name}.trashinfo").unlink()
    return served.folders[0] / name


def settled(served: Served) -> None:
    """The watcher saw the last change and its scan ran (and nothing is left to do)."""
    time.sleep(1.5)  # past the debounce and settle (0.1 + 0.5 s)
    wait_for(served.idle, timeout=60, what="the daemon idle")


@pytest.mark.parametrize("first", ["image", "sidecar"])
def test_a_restored_item_gets_its_id_back_whichever_file_comes_back_first(served: Served, first: str) -> None:
    image = served.folders[0] / (NAMES[0] if first == "image" else NAMES[1])
    side = image.with_name(image.name + ".xmp")
    image_id = served.listed()[str(image)]
    served.client.request("PATCH", f"/items/{image_id}", body={"add_tags": ["back again"], "rating": 4})
    assert trash(served, image) == image_id
    assert not side.exists()  # the sidecar went along
    order = [image.name, side.name] if first == "image" else [side.name, image.name]
    restore(served, order[0])
    settled(served)
    if first == "sidecar":
        assert side.is_file(), "the sidecar back before its image was taken for an orphan and removed"
        assert str(image) not in served.listed()
    restore(served, order[1])
    wait_for(lambda: served.listed().get(str(image)) == image_id, timeout=60, what="the restored image under its id")
    settled(served)
    assert served.listed().get(str(image)) == image_id
    item = served.get(f"/items/{image_id}")
    assert "back again" in [t["name"] for t in item["tags"]] and item["rating"] == 4


def test_a_pixdex_only_sidecar_back_alone_stays(served: Served) -> None:
    """Only the sidecar is restored (the image stays in the trash): it is left alone, across scans and a restart,
    and the image restored later still takes its id."""
    image = served.folders[0] / NAMES[2]
    side = image.with_name(image.name + ".xmp")
    if not side.is_file():
        pytest.skip("without models pixdex writes no sidecar of its own (only a person's edit makes one)")
    image_id = trash(served, image)
    restore(served, side.name)
    settled(served)
    served.post("/reindex", {"paths": [str(served.folders[0])]})
    settled(served)
    served.stop()
    served.start()
    settled(served)
    assert side.is_file()
    restore(served, image.name)
    wait_for(lambda: served.listed().get(str(image)) == image_id, timeout=60, what="the restored image under its id")
    assert len(served.listed()) == len([p for p in served.folders[0].iterdir() if p.suffix == ".jpg"])
