"""Sidecars with the daemon running: another program's edit reaches the index within seconds, with no
decode and no model run; a machine keyword a person removed stays removed; pixdex's own writes do not
loop back. The real daemon on a real socket; exiv2 and exiftool play the other programs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CORPUS, make_library
from served import Served, wait_for
from test_sidecar import keywords_as_programs_see, leaf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("sidecars")
    pics = root / "pics"
    make_library(pics)
    if CORPUS.is_dir():
        shutil.copyfile(CORPUS / "IPTC.jpg", pics / "holiday" / "iptc_keywords.jpg")
    daemon = Served(root, model_dir, [pics]).start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 9 + CORPUS.is_dir(), timeout=90, what="the library")
    yield daemon
    daemon.stop()


def progress(served: Served) -> dict[str, int]:
    return served.status()["progress"]


def tag_hits(served: Served, tag: str) -> set[str]:
    return {Path(h["path"]).name for h in served.get("/search", q=f"tag:{quote_tag(tag)}", k=50)["hits"]}


def quote_tag(tag: str) -> str:
    return f'"{tag}"' if " " in tag else tag


def item_by_name(served: Served, name: str) -> dict[str, object]:
    image_id = next(i for p, i in served.listed().items() if p.endswith("/" + name))
    return served.get(f"/items/{image_id}")


def test_a_keyword_added_by_another_program_is_searchable_within_seconds(served: Served, exiv2: str) -> None:
    image = served.folders[0] / "garden" / "red_flower.png"
    side = image.with_name(image.name + ".xmp")
    assert side.exists()  # pixdex wrote it
    before = progress(served)
    subprocess.run([exiv2, "-M", "set Xmp.dc.subject XmpBag zanzibar", str(side)], check=True, capture_output=True)
    start = time.monotonic()
    wait_for(lambda: "red_flower.png" in tag_hits(served, "zanzibar"), timeout=20, what="the new keyword in tag:")
    took = time.monotonic() - start
    assert "red_flower.png" in {Path(h["path"]).name for h in served.get("/search", q="zanzibar", k=5)["hits"]}
    after = progress(served)
    assert after["decoded"] == before["decoded"] and after["inference_calls"] == before["inference_calls"]
    assert after["sidecars_read"] > before["sidecars_read"]
    assert took < 15
    # The person's keyword now reaches every field the other programs read.
    wait_for(lambda: served.idle(), timeout=20, what="idle")
    item = item_by_name(served, "red_flower.png")
    assert {"name": "zanzibar", "confidence": 1.0, "category": "person", "source": "sidecar"} in item["tags"]


def test_a_machine_keyword_removed_with_exiftool_stays_removed(served: Served, exiftool: str) -> None:
    image = served.folders[0] / "holiday" / "harbour_boats.jpg"
    side = image.with_name(image.name + ".xmp")
    item = item_by_name(served, image.name)
    machine = [str(t["name"]) for t in item["tags"] if t.get("category") != "person"]
    assert machine, "the stand-in tagger gave no keyword"
    gone = machine[0]
    assert image.name in tag_hits(served, gone)
    subprocess.run([exiftool, "-overwrite_original", f"-XMP-dc:Subject-={gone}", str(side)], check=True,
                   capture_output=True)
    wait_for(lambda: image.name not in tag_hits(served, gone), timeout=20, what="the removed keyword to leave tag:")
    # Re-inference (a person asks for it; a new model would do the same) does not bring it back.
    calls = progress(served)["inference_calls"]
    served.post("/reindex", {"paths": [str(image)]})
    wait_for(lambda: progress(served)["inference_calls"] > calls and served.idle(), timeout=30, what="re-inference")
    assert image.name not in tag_hits(served, gone)
    for program, keywords in keywords_as_programs_see(exiftool, side).items():
        assert gone not in {leaf(k) for k in keywords}, program
    assert gone not in [t["name"] for t in item_by_name(served, image.name)["tags"]]


def test_pixdex_does_not_react_to_its_own_writes(served: Served) -> None:
    wait_for(lambda: served.idle(), timeout=30, what="idle")
    settled = progress(served)
    # Re-tag everything: pixdex rewrites every sidecar (new keywords from the model: the ASKED priority
    # skips nothing), and the watcher sees each rename. None of them may come back as a "sidecar changed".
    served.post("/reindex", {"paths": [str(served.folders[0])]})
    wait_for(lambda: progress(served)["committed"] >= settled["committed"] + 9 and served.idle(), timeout=60,
             what="the re-tagging")
    time.sleep(3)  # the watcher's events for pixdex's own renames have long arrived
    again = progress(served)
    assert again["sidecars_read"] == settled["sidecars_read"]
    assert served.status()["queue"] == {"asked": 0, "new/changed": 0, "backfill": 0}


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/exiftool is not beside the checkout")
def test_embedded_keywords_reach_tag_and_the_new_sidecar(served: Served, exiftool: str) -> None:
    assert "iptc_keywords.jpg" in tag_hits(served, "ExifTool")
    side = served.folders[0] / "holiday" / "iptc_keywords.jpg.xmp"
    for program, keywords in keywords_as_programs_see(exiftool, side).items():
        assert {"ExifTool", "Test", "IPTC"} <= {leaf(k) for k in keywords}, program


def test_an_image_moved_onto_a_waiting_sidecar_takes_its_keywords(served: Served, exiftool: str) -> None:
    pics = served.folders[0]
    source = pics / "city" / "night_street.gif"
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject+=plainkw", str(source) + ".xmp"], check=True,
                   capture_output=True)
    wait_for(lambda: "night_street.gif" in tag_hits(served, "plainkw"), timeout=20, what="the first keyword")
    (pics / "moved").mkdir()
    waiting = pics / "moved" / "arrived.gif.xmp"
    subprocess.run([exiftool, "-o", str(waiting), "-XMP-dc:Subject=destkw", str(source) + ".xmp"], check=True,
                   capture_output=True)
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject=destkw", str(waiting)], check=True,
                   capture_output=True)
    time.sleep(1)
    source.rename(pics / "moved" / "arrived.gif")
    wait_for(lambda: tag_hits(served, "destkw") == {"arrived.gif"}, timeout=20, what="the waiting sidecar's keyword")
    wait_for(lambda: served.idle(), timeout=20, what="idle")
    assert tag_hits(served, "plainkw") == set()


def test_an_image_moved_over_another_takes_that_ones_sidecar(served: Served, exiftool: str) -> None:
    pics = served.folders[0]
    source, target = pics / "city" / "old_tram.bmp", pics / "garden" / "green_leaves.png"
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject+=tramkw", str(source) + ".xmp"], check=True,
                   capture_output=True)
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject+=leafkw", str(target) + ".xmp"], check=True,
                   capture_output=True)
    wait_for(lambda: tag_hits(served, "tramkw") == {"old_tram.bmp"} and tag_hits(served, "leafkw") ==
             {"green_leaves.png"}, timeout=20, what="both keywords")
    moved_id = item_by_name(served, "old_tram.bmp")["id"]
    os.replace(source, pics / "garden" / "green_leaves.bmp")  # another name: no clash of formats
    os.replace(pics / "garden" / "green_leaves.bmp", target)
    wait_for(lambda: served.idle() and item_by_name(served, "green_leaves.png")["id"] == moved_id, timeout=30,
             what="the move over the other image")
    wait_for(lambda: tag_hits(served, "leafkw") == {"green_leaves.png"}, timeout=20, what="the sidecar it landed on")
    assert tag_hits(served, "tramkw") == set()


def test_a_read_only_sidecar_made_writable_gets_pixdexs_keywords(served: Served) -> None:
    pics = served.folders[0]
    image = pics / "holiday" / "beach_sunset_02.jpg"
    side = image.with_name(image.name + ".xmp")
    side.write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
                    '<rdf:li>lockedkw</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')
    side.chmod(0o444)
    wait_for(lambda: "read-only" in str(item_by_name(served, image.name)["sidecar_error"]), timeout=20,
             what="the refusal")
    wait_for(lambda: image.name in tag_hits(served, "lockedkw"), timeout=10, what="the refused sidecar, read")
    side.chmod(0o644)  # what the message says to do; nothing else
    wait_for(lambda: b"pixdex|" in side.read_bytes(), timeout=20, what="pixdex's keywords in the sidecar")
    wait_for(lambda: item_by_name(served, image.name)["sidecar_error"] is None, timeout=20, what="the error to clear")
