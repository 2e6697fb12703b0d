"""Edits through the real daemon on its real socket: the colour label (xmp:Label) in the item's JSON and found
with `label:` at once; keywords in pixdex's own namespace refused with a 400 naming them; many items edited in
one request — every sidecar written, one commit of the catalog for all of them, and an answer that says which
failed and why."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyexiv2
import pytest
from photos import scene
from served import Served, wait_for

pytestmark = pytest.mark.slow

NAMES = [f"pic{n}.jpg" for n in range(8)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("edits")
    pics = root / "pics"
    pics.mkdir()
    for n, name in enumerate(NAMES):
        scene(400 + n).save(pics / name, quality=90)
    daemon = Served(root, model_dir, [pics])
    daemon.start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == len(NAMES), timeout=120, what="the library")
    wait_for(lambda: all((pics / f"{n}.xmp").is_file() for n in NAMES), what="the sidecars")
    yield daemon
    daemon.stop()


def id_of(served: Served, name: str) -> int:
    return served.listed()[str(served.folders[0] / name)]


def xmp_of(path: Path) -> dict[str, object]:
    with pyexiv2.Image(str(path.with_name(path.name + ".xmp"))) as side:
        return dict(side.read_xmp())


def found(served: Served, query: str) -> set[int]:
    return {h["id"] for h in served.get("/search", q=query, k=50)["hits"]}


def patch(served: Served, route: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    status, answer = served.raw("PATCH", route, {"Host": "localhost", "Content-Type": "application/json"},
                                json.dumps(body).encode())
    assert isinstance(answer, dict)
    return status, answer


def generation(served: Served) -> int:
    with sqlite3.connect(f"file:{served.data / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def test_the_colour_label_is_in_the_item_and_searchable_at_once(served: Served) -> None:
    image_id = id_of(served, NAMES[0])
    assert served.get(f"/items/{image_id}")["label"] is None
    item = served.client.request("PATCH", f"/items/{image_id}", body={"label": "purple"})  # as label:purple spells it
    assert item["label"] == "Purple" and served.get(f"/items/{image_id}")["label"] == "Purple"
    assert xmp_of(served.folders[0] / NAMES[0])["Xmp.xmp.Label"] == "Purple"
    assert found(served, "label:purple") == {image_id}
    assert image_id not in found(served, "-label:purple")
    assert served.client.request("PATCH", f"/items/{image_id}", body={"label": ""})["label"] is None
    assert found(served, "label:purple") == set()
    status, body = served.raw("GET", "/search?q=label:pink", {"Host": "localhost"})
    assert status == 400 and "label is a colour label" in str(body)


@pytest.mark.parametrize("field, keyword", [("add_tags", "pixdex|dog"), ("add_tags", "Pixdex | cat"),
                                            ("add_tags", "pixdex"), ("remove_tags", "pixdex|dog")])
def test_keywords_in_pixdexs_own_namespace_are_refused(served: Served, field: str, keyword: str) -> None:
    image = served.folders[0] / NAMES[1]
    image_id = id_of(served, NAMES[1])
    before = image.with_name(image.name + ".xmp").read_bytes()
    for route, body in ((f"/items/{image_id}", {field: ["fine", keyword]}),
                        ("/items", {"ids": [image_id], field: [keyword]})):
        status, answer = patch(served, route, body)
        assert status == 400, answer
        assert answer["parameter"] == field and keyword in str(answer["error"]), answer
    assert image.with_name(image.name + ".xmp").read_bytes() == before  # nothing was written
    # Only the first level is pixdex's: a person's own tree may hold a "pixdex" further down.
    assert served.client.request("PATCH", f"/items/{image_id}", body={"add_tags": ["Apps|pixdex"]})["tags"]


def test_many_items_are_edited_in_one_commit_and_the_answer_says_which_failed(served: Served) -> None:
    ids = [id_of(served, n) for n in NAMES[2:7]]
    locked = served.folders[0] / f"{NAMES[6]}.xmp"
    locked.chmod(0o444)  # a sidecar pixdex may not write: that item fails, the others go on
    wait_for(served.idle, timeout=60, what="the daemon idle after the chmod")
    before = generation(served)
    answer = served.client.request("PATCH", "/items", body={"ids": [*ids, 98765], "add_tags": ["batch"], "rating": 2})
    assert generation(served) == before + 1  # one writer transaction for every item (one text-index commit)
    assert [r["id"] for r in answer["results"]] == [*ids, 98765]
    assert [r["ok"] for r in answer["results"]] == [True] * 4 + [False, False]
    assert "read-only" in answer["results"][4]["error"] and answer["results"][5]["error"] == "no item 98765"
    assert (answer["ok"], answer["failed"]) == (4, 2)
    assert found(served, "tag:batch rating:2") == set(ids[:4])
    one = served.client.request("PATCH", f"/items/{ids[0]}", body={"add_tags": ["Zürich trip"]})
    assert "Zürich trip" in [t["name"] for t in one["tags"]]
    for spelled in ('"Zürich trip"', '"zurich trip"', '"ZURICH_trip"'):  # accents, case and underscores aside
        assert found(served, f"tag:{spelled}") == {ids[0]}, spelled
    assert found(served, "tag:zurich") == set()  # a keyword, not a word in one
    for name in NAMES[2:6]:
        xmp = xmp_of(served.folders[0] / name)
        assert xmp["Xmp.xmp.Rating"] == "2" and "batch" in str(xmp["Xmp.dc.subject"])
    assert "batch" not in str(xmp_of(served.folders[0] / NAMES[6]).get("Xmp.dc.subject"))
    locked.chmod(0o644)
