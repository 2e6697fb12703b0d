"""Places from GPS into the sidecar's standard location fields, only where the person has none (real pyexiv2
writes, real GeoNames data): a person's value is never replaced, their later edit wins, pixdex's own values
follow the position; the index's `place:` words hold both."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pixdex.indexer.metadata.effective import effective
from pixdex.indexer.places import Place, place_at
from pixdex.indexer.sidecars.merge import write_tags
from pixdex.indexer.sidecars.read import read_sidecar, read_state

PARIS, TOKYO = (48.8566, 2.3522), (35.6812, 139.7671)


def test_geonames_names_the_big_city_near_and_nothing_at_sea() -> None:
    assert place_at(*PARIS) == Place("Paris", "Île-de-France", "France", "FR")
    assert place_at(*TOKYO).city == "Tokyo" and place_at(*TOKYO).country == "Japan"  # not the suburb "Ginza"
    assert place_at(64.1466, -21.9426).city == "Reykjavík"  # not "Kópavogur", nearer in degrees only
    assert place_at(0.0, -30.0) == Place() and place_at(None, 2.0) == Place() and place_at(91.0, 0.0) == Place()


def location(sidecar: Path) -> dict[str, str]:
    xmp = read_sidecar(sidecar)
    keys = {"city": "Xmp.photoshop.City", "state": "Xmp.photoshop.State", "country": "Xmp.photoshop.Country",
            "code": "Xmp.iptc.CountryCode"}
    return {name: str(xmp[key]) for name, key in keys.items() if key in xmp}


def test_location_fields_are_filled_only_where_the_person_has_none(tmp_path: Path) -> None:
    image, sidecar = tmp_path / "a.jpg", tmp_path / "a.jpg.xmp"
    Image.new("RGB", (64, 48)).save(image)
    write_tags(image, ["dog"], "pixdex", "m", position=PARIS, own_place=Place())
    assert location(sidecar) == {"city": "Paris", "state": "Île-de-France", "country": "France", "code": "FR"}

    sidecar.write_text(sidecar.read_text().replace('photoshop:City="Paris"', 'photoshop:City="Montmartre"'))
    assert "Montmartre" in sidecar.read_text()  # the person's later edit
    write_tags(image, ["dog"], "pixdex", "m", position=TOKYO, own_place=Place())  # and the photo's GPS moved
    assert location(sidecar) == {"city": "Montmartre", "state": "Tokyo", "country": "Japan", "code": "JP"}

    state = read_state(image, "pixdex")
    assert state.location == {"city": "Montmartre"}  # the person's; GeoNames' values are not theirs
    _tags, words, _rejected, shown = effective([], {}, state, geo=place_at(*TOKYO).as_dict())
    assert "Montmartre" in words
    assert shown["place"] == {"city": "Montmartre", "state": "Tokyo", "country": "Japan", "country_code": "JP"}
    assert shown["geo"]["city"] == "Tokyo"


def test_the_images_own_location_keeps_the_sidecar_field_empty(tmp_path: Path) -> None:
    image, sidecar = tmp_path / "b.jpg", tmp_path / "b.jpg.xmp"
    Image.new("RGB", (64, 48)).save(image)
    write_tags(image, ["dog"], "pixdex", "m", position=PARIS, own_place=Place(country="Frankreich"))
    assert location(sidecar) == {"city": "Paris", "state": "Île-de-France", "code": "FR"}  # no Country: theirs
    write_tags(image, ["dog"], "pixdex", "m", position=None, own_place=Place())  # the position was removed
    assert location(sidecar) == {}  # pixdex's values go with it; nothing else was there


def test_a_location_field_the_person_deleted_stays_deleted(tmp_path: Path) -> None:
    """Found by a trial: `exiftool -XMP-photoshop:Country= a.jpg.xmp`, then a reindex, and "Japan" was back. As with
    a machine keyword the person removed, pixdex does not fill it again; a value the person types later is theirs."""
    image, sidecar = tmp_path / "a.jpg", tmp_path / "a.jpg.xmp"
    Image.new("RGB", (64, 48)).save(image)
    write_tags(image, ["dog"], "pixdex", "m", position=TOKYO, own_place=Place())
    assert location(sidecar)["country"] == "Japan"
    text = sidecar.read_text()
    sidecar.write_text(text.replace('photoshop:Country="Japan"', ""))
    assert "photoshop:Country" not in sidecar.read_text()
    write_tags(image, ["dog"], "pixdex", "m", position=TOKYO, own_place=Place())
    write_tags(image, ["dog"], "pixdex", "m", position=TOKYO, own_place=Place())
    assert "country" not in location(sidecar) and location(sidecar)["city"] == "Tokyo"
    typed = '<rdf:Description photoshop:Country="Nippon" '  # the person types one later
    sidecar.write_text(sidecar.read_text().replace("<rdf:Description ", typed, 1))
    write_tags(image, ["dog"], "pixdex", "m", position=TOKYO, own_place=Place())
    assert location(sidecar)["country"] == "Nippon"
