"""Duplicates and curation through the real daemon on its real socket: GET /duplicates and `pixdex duplicates
--json` (as a client of it) find the planted copies; a rating goes into the sidecar as xmp:Rating and `rating:4`
finds it at once; many items are edited in one request; an item goes to the freedesktop trash with its sidecar —
out of search, never deleted — and, restored as a file manager restores it, comes back with its id."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyexiv2
import pytest
from conftest import PIXDEX
from served import Served, wait_for
from test_duplicates import OTHERS, PLANTED, check_groups, plant

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("curation")
    pics = root / "pics"
    pics.mkdir()
    which = plant(pics)
    daemon = Served(root, model_dir, [pics], extra="[index]\nsave_seconds = 1\n")
    daemon.environ["HOME"] = str(root)  # the trash is $XDG_DATA_HOME/Trash on the home's filesystem
    daemon.start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == PLANTED * 5 + OTHERS, timeout=240, what="the library")
    daemon.which = which  # type: ignore[attr-defined]
    yield daemon
    daemon.stop()


def xmp_of(path: Path) -> dict[str, object]:
    with pyexiv2.Image(str(path.with_name(path.name + ".xmp"))) as side:
        return dict(side.read_xmp())


def id_of(served: Served, name: str) -> int:
    return next(i for p, i in served.listed().items() if p.endswith("/" + name))


def test_get_duplicates_and_the_cli_through_the_daemon_find_every_planted_copy(served: Served) -> None:
    check_groups(served.get("/duplicates"), served.which)  # type: ignore[attr-defined]
    proc = subprocess.run([str(PIXDEX), "--config", str(served.config), "duplicates", "--json"], env=served.environ,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_groups(json.loads(proc.stdout), served.which)  # type: ignore[attr-defined]
    status, body = served.raw("GET", "/duplicates?threshold=300", {"Host": "localhost"})
    assert status == 400 and body["parameter"] == "threshold"  # type: ignore[index]


def test_a_rating_goes_into_the_sidecar_and_is_searchable_at_once(served: Served) -> None:
    image = served.folders[0] / "other101.jpg"
    image_id = id_of(served, image.name)
    item = served.client.request("PATCH", f"/items/{image_id}", body={"rating": 4, "label": "Green"})
    assert item["rating"] == 4
    xmp = xmp_of(image)
    assert xmp["Xmp.xmp.Rating"] == "4" and xmp["Xmp.xmp.Label"] == "Green"
    hits = served.get("/search", q="rating:4", k=50)["hits"]
    assert [h["id"] for h in hits] == [image_id]
    for bad in (-1, 6, "4", 2.5, True):
        status, body = served.raw("PATCH", f"/items/{image_id}", {"Host": "localhost", "Content-Type":
                                  "application/json"}, json.dumps({"rating": bad}).encode())
        assert status == 400 and body["parameter"] == "rating", (bad, body)  # type: ignore[index]
    assert xmp_of(image)["Xmp.xmp.Rating"] == "4"


def test_many_items_are_edited_in_one_request(served: Served) -> None:
    names = ["other102.jpg", "other103.jpg", "other104.jpg"]
    ids = [id_of(served, n) for n in names]
    answer = served.client.request("PATCH", "/items", body={"ids": [*ids, 12345], "add_tags": ["shortlist"],
                                                           "rating": 3})
    assert [r["id"] for r in answer["results"]] == [*ids, 12345]
    assert [r["ok"] for r in answer["results"]] == [True, True, True, False]
    assert answer["results"][3]["error"] == "no item 12345"
    for name in names:
        xmp = xmp_of(served.folders[0] / name)
        assert xmp["Xmp.xmp.Rating"] == "3" and "shortlist" in str(xmp["Xmp.dc.subject"])
    found = {h["id"] for h in served.get("/search", q="tag:shortlist rating:3", k=50)["hits"]}
    assert found == set(ids)


def test_an_item_goes_to_the_trash_with_its_sidecar_and_comes_back_with_its_id(served: Served) -> None:
    image = served.folders[0] / "other110.jpg"
    served.client.request("PATCH", f"/items/{id_of(served, image.name)}", body={"add_tags": ["restore me"]})
    image_id = id_of(served, image.name)
    made = subprocess.run([str(PIXDEX), "--config", str(served.config), "token", "--new", "--only", "pics"],
                          env=served.environ, capture_output=True, text=True, check=True)
    limited = {"Host": "127.0.0.1", "Authorization": f"Bearer {made.stdout.strip()}"}
    assert served.raw("POST", f"/items/{image_id}/trash", limited, tcp=True)[0] == 403
    assert image.exists()
    full = {"Host": "127.0.0.1", "Authorization": f"Bearer {served.token()}"}
    status, body = served.raw("POST", f"/items/{image_id}/trash", full, tcp=True)
    assert status == 200, body
    trash = served.root / "data" / "Trash"
    assert not image.exists() and (trash / "files" / image.name).read_bytes()
    info = (trash / "info" / f"{image.name}.trashinfo").read_text()
    assert f"Path={image}" in info.replace("%20", " ") and "DeletionDate=" in info
    assert (trash / "files" / f"{image.name}.xmp").is_file()  # the sidecar went along
    assert image_id not in served.listed().values()
    assert served.raw("GET", f"/items/{image_id}", {"Host": "localhost"})[0] == 404
    # The file manager's "Restore": both files back where they were, their .trashinfo gone.
    for name in (image.name, f"{image.name}.xmp"):
        shutil.move(trash / "files" / name, served.folders[0] / name)
        (trash / "info" / f"{name}.trashinfo").unlink()
    back = wait_for(lambda: served.listed().get(str(image)), timeout=60, what="the restored image")
    assert back == image_id
    assert "restore me" in [t["name"] for t in served.get(f"/items/{image_id}")["tags"]]


def test_the_daemon_hashes_a_library_indexed_before_hashes(served: Served) -> None:
    import sqlite3

    served.stop()
    with sqlite3.connect(served.data / "catalog.sqlite3") as db:
        db.execute("DELETE FROM phashes")  # as a library indexed before pixdex hashed images
        embedded = db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    served.start()
    found = wait_for(lambda: (lambda d: d if not d["notes"] else None)(served.get("/duplicates")), timeout=120,
                     what="every image hashed again by the daemon's backfill")
    which = {p: w for p, w in served.which.items() if Path(p).exists()}  # type: ignore[attr-defined]
    check_groups(found, which)
    with sqlite3.connect(served.data / "catalog.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == embedded  # nothing re-embedded
    assert served.status()["progress"]["committed"] == 0  # nor indexed again
