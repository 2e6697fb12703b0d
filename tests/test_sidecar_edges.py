"""The edge paths where a person's metadata used to be lost or hidden (issue 16): Latin-1 IPTC and EXIF,
a keyword path spelled in dc:subject, upper-case ``IMG.XMP``, a RAW that takes the ``IMG.xmp`` a JPEG used,
GPS that only XMP holds. Files made and read by the real exiftool (and pyexiv2 for a broken charset)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Env, solid
from test_index_search import catalog_rows, paths, search
from test_sidecar import PERSON_SIDECAR, as_list, exif_json, keywords_as_programs_see, leaf

from pixdex.indexer.metadata.image import embedded_metadata
from pixdex.indexer.sidecars.merge import write_tags
from pixdex.indexer.sidecars.naming import sidecar_path
from pixdex.indexer.sidecars.read import read_sidecar, read_state


def run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True)


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.jpg"
    solid((10, 20, 30)).save(path)
    return path


# 4. Text that is not UTF-8 -------------------------------------------------------------------
def latin1_iptc(exiftool: str, image: Path) -> None:
    """What exiftool writes unless told otherwise (and many cameras and older programs): IPTC in Latin-1."""
    run(exiftool, "-q", "-overwrite_original", "-IPTC:Keywords=Café", "-IPTC:Keywords=Beach",
        "-IPTC:ObjectName=Été à Nice", "-XMP-xmp:Rating=4", str(image))


def test_latin1_iptc_keeps_every_keyword_title_and_rating(image: Path, exiftool: str) -> None:
    latin1_iptc(exiftool, image)
    assert b"Caf\xe9" in image.read_bytes()  # Latin-1 bytes indeed
    before = image.read_bytes()
    facts = embedded_metadata(before)
    assert facts.keywords == ["Café", "Beach"] and facts.title == "Été à Nice" and facts.rating == 4
    state = write_tags(image, ["dog"], "pixdex", "m")
    seen = exif_json(exiftool, sidecar_path(image))
    assert seen["XMP-dc:Subject"] == ["Café", "Beach", "dog"]  # Café is Café in the sidecar
    assert seen["XMP-dc:Title"] == "Été à Nice" and seen["XMP-xmp:Rating"] == 4
    assert {"Café", "Beach"} <= {p["name"] for p in state.person} and state.rating == 4
    assert image.read_bytes() == before  # the image itself is never changed


def test_latin1_exif_beside_utf8_xmp_loses_nothing(image: Path, exiftool: str) -> None:
    run(exiftool, "-q", "-overwrite_original", "-charset", "exif=Latin", "-EXIF:Copyright=© Zoë",
        "-EXIF:Artist=Zoë Ørsted", "-XPKeywords=東京;Été", "-XMP-dc:Subject=Straße", "-XMP-dc:Subject=Côte",
        "-XMP-xmp:Rating=5", str(image))  # Windows' XP tags (UCS-2) beside Latin-1 EXIF and UTF-8 XMP
    assert b"Zo\xeb" in image.read_bytes()
    facts = embedded_metadata(image.read_bytes())
    assert facts.keywords == ["Straße", "Côte"] and facts.rating == 5 and facts.creator == ["Zoë Ørsted"]
    write_tags(image, ["dog"], "pixdex", "m")
    seen = exif_json(exiftool, sidecar_path(image))
    assert seen["XMP-dc:Subject"] == ["Straße", "Côte", "dog"] and seen["XMP-xmp:Rating"] == 5
    assert as_list(seen["XMP-dc:Creator"]) == ["Zoë Ørsted"]


def test_iptc_declared_utf8_is_read_as_utf8(image: Path, exiftool: str) -> None:
    run(exiftool, "-q", "-overwrite_original", "-IPTC:CodedCharacterSet=UTF8", "-charset", "iptc=UTF8",
        "-IPTC:Keywords=Café", "-IPTC:Keywords=東京", str(image))
    facts = embedded_metadata(image.read_bytes())
    assert facts.keywords == ["Café", "東京"] and facts.warnings == []


def test_a_field_that_lies_about_its_charset_is_kept_and_said(image: Path) -> None:
    import pyexiv2

    with pyexiv2.Image(str(image)) as handle:  # declared UTF-8, written in Latin-1: one bad field
        handle.modify_iptc({"Iptc.Envelope.CharacterSet": "\x1b%G", "Iptc.Application2.Keywords": ["Café", "Beach"]},
                           encoding="latin-1")
        handle.modify_xmp({"Xmp.xmp.Rating": "3"})
    with pytest.warns(UserWarning, match="IPTC Keywords is declared UTF-8 but is not"):
        facts = embedded_metadata(image.read_bytes())
    assert facts.keywords == ["Café", "Beach"] and facts.rating == 3
    assert facts.warnings and "Keywords" in facts.warnings[0]
    assert facts.as_dict()["warnings"] == facts.warnings  # kept with the image's row in the catalog


def test_a_broken_exif_block_costs_only_itself(image: Path, exiftool: str) -> None:
    run(exiftool, "-q", "-overwrite_original", "-IPTC:Keywords=Café", "-XMP-dc:Subject=Café", "-XMP-dc:Subject=Beach",
        "-XMP-xmp:Rating=2", "-EXIF:Artist=Zoë", str(image))
    data = bytearray(image.read_bytes())
    at = data.find(b"Exif\x00\x00") + 6
    data[at + 8:at + 40] = b"\xff" * 32  # IFD0 claims 65535 entries: exiv2 refuses the whole image for it
    with pytest.warns(UserWarning, match="EXIF metadata is unreadable and was skipped"):
        facts = embedded_metadata(bytes(data))
    assert facts.keywords == ["Café", "Beach"] and facts.rating == 2 and len(facts.warnings) == 1


def test_latin1_metadata_is_searchable_after_indexing(env: Env, exiftool: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    image = env.pics / "nice.jpg"
    solid((200, 120, 40), size=(96, 72)).save(image)
    latin1_iptc(exiftool, image)
    summary = env.index_json(capsys)
    assert summary["failed"] == 0
    assert paths(search(env, capsys, "tag:café")) == {"nice.jpg"}
    assert paths(search(env, capsys, "rating:>=4")) == {"nice.jpg"}
    assert "nice.jpg" in paths(search(env, capsys, "Été"))


# 5. A keyword path spelled in dc:subject ------------------------------------------------------
def test_a_path_in_dc_subject_gets_no_mangled_twin(image: Path, exiftool: str) -> None:
    side = sidecar_path(image)
    side.write_text(PERSON_SIDECAR.replace("<rdf:li>Grandma</rdf:li>", "<rdf:li>Places|Tokyo</rdf:li>")
                    .replace("People|Grandma", "Places|Tokyo"))
    state = write_tags(image, ["cat"], "pixdex", "m")
    seen = exif_json(exiftool, side)
    assert as_list(seen["XMP-lr:HierarchicalSubject"]) == ["Places|Tokyo", "dog", "pixdex|cat"]
    assert as_list(seen["XMP-digiKam:TagsList"]) == ["Places/Tokyo", "dog", "pixdex/cat"]
    assert not any("\u00a6" in k for k in as_list(seen["XMP-lr:HierarchicalSubject"]))
    assert [p["name"] for p in state.person] == ["Tokyo", "dog"]
    write_tags(image, ["cat", "bird"], "pixdex", "m")  # stable: nothing comes back doubled
    assert as_list(exif_json(exiftool, side)["XMP-lr:HierarchicalSubject"]) == \
        ["Places|Tokyo", "dog", "pixdex|cat", "pixdex|bird"]


# 7. Upper-case sidecars ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.XMP", "a.Xmp", "a.JPG.XMP", "a.jpg.XMP"])
@pytest.mark.parametrize("naming", ["image.ext.xmp", "image.xmp"])
def test_a_sidecar_in_any_case_is_the_images(image: Path, name: str, naming: str) -> None:
    side = image.with_name(name)
    side.write_text(PERSON_SIDECAR)
    assert sidecar_path(image, naming) == side
    state = write_tags(image, ["cat"], "pixdex", "m", naming=naming)
    assert sorted(p.name for p in image.parent.iterdir()) == sorted(["a.jpg", name])  # no second sidecar
    assert "cat" in read_sidecar(side)["Xmp.dc.subject"]
    assert {"name": "Grandma", "path": "People|Grandma"} in state.person


def test_an_exact_name_wins_and_case_twins_take_only_their_own(tmp_path: Path) -> None:
    lower, upper = tmp_path / "a.jpg", tmp_path / "A.JPG"
    solid((1, 2, 3)).save(lower)
    (tmp_path / "a.XMP").write_text(PERSON_SIDECAR)
    assert sidecar_path(lower) == tmp_path / "a.XMP"
    (tmp_path / "a.jpg.xmp").write_text(PERSON_SIDECAR)
    assert sidecar_path(lower) == tmp_path / "a.jpg.xmp"  # the exact one first
    solid((1, 2, 3)).save(upper, format="JPEG")
    (tmp_path / "a.jpg.xmp").unlink()
    # a.jpg and A.JPG: a case variant could be either's, so each takes only its exact name.
    assert sidecar_path(lower) == tmp_path / "a.jpg.xmp" and sidecar_path(upper) == tmp_path / "A.JPG.xmp"


def test_an_upper_case_sidecar_is_indexed_and_its_edits_are_seen(env: Env, exiftool: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    image = env.pics / "IMG_0042.JPG"
    solid((30, 90, 160), size=(96, 72)).save(image, format="JPEG")
    side = env.pics / "IMG_0042.XMP"  # as a camera or a Windows tool writes it
    side.write_text(PERSON_SIDECAR.replace("Grandma", "lighthouse"))
    assert env.index_json(capsys)["failed"] == 0
    assert sorted(p.name for p in env.pics.iterdir()) == ["IMG_0042.JPG", "IMG_0042.XMP"]
    assert paths(search(env, capsys, "tag:lighthouse")) == {"IMG_0042.JPG"}
    assert any(k.startswith("pixdex|") for k in as_list(exif_json(exiftool, side)["XMP-lr:HierarchicalSubject"]))
    run(exiftool, "-q", "-overwrite_original", "-XMP-dc:Subject+=harbour", str(side))  # another program's edit
    summary = env.index_json(capsys)
    assert summary["decoded"] == 0 and paths(search(env, capsys, "tag:harbour")) == {"IMG_0042.JPG"}


# 8. A RAW that takes IMG.xmp --------------------------------------------------------------------
def test_a_raw_beside_an_adopted_sidecar_hands_the_keywords_over(tmp_path: Path, exiftool: str) -> None:
    jpeg = tmp_path / "IMG_10.jpg"
    solid((1, 2, 3)).save(jpeg)
    shared = tmp_path / "IMG_10.xmp"
    shared.write_text(PERSON_SIDECAR)
    write_tags(jpeg, ["cat", "bird"], "pixdex", "m")  # alone with its stem: IMG_10.xmp is the JPEG's
    assert "pixdex|cat" in read_sidecar(shared)["Xmp.lr.hierarchicalSubject"]
    run(exiftool, "-q", "-overwrite_original", "-XMP-dc:Subject-=bird", str(shared))  # a person rejects one
    (tmp_path / "IMG_10.CR2").write_bytes(b"raw")  # now IMG_10.xmp is the RAW's (Lightroom)
    state = write_tags(jpeg, ["cat", "bird"], "pixdex", "m")  # the JPEG reindexed
    own = tmp_path / "IMG_10.jpg.xmp"
    assert sidecar_path(jpeg) == own and state.path == bytes(own) and state.error is None
    for program, keywords in keywords_as_programs_see(exiftool, own).items():
        assert {"Grandma", "dog", "cat"} <= {leaf(k) for k in keywords}, program
        assert "bird" not in {leaf(k) for k in keywords}, program
    assert state.rejected == ["bird"]  # the person's rejection came along too
    # And what the person set beside the keywords (found by a trial: a rating was lost when a same-named file came)
    ours = read_sidecar(own)
    assert ours["Xmp.xmp.Rating"] == "4" and ours["Xmp.dc.description"] == {'lang="x-default"': "Our garden, 1998"}
    raws = read_sidecar(shared)
    assert "Grandma" in raws["Xmp.dc.subject"] and "People|Grandma" in raws["Xmp.lr.hierarchicalSubject"]
    assert not any(k.startswith("Xmp.pixdex.") for k in raws) and "cat" not in raws["Xmp.dc.subject"]
    assert raws["Xmp.xmp.Rating"] == "4" and raws["Xmp.dc.description"] == {'lang="x-default"': "Our garden, 1998"}


def test_a_raws_own_sidecar_lends_its_keywords_to_the_jpeg_and_stays_untouched(tmp_path: Path,
                                                                               exiftool: str) -> None:
    """Found by a trial: with IMG.CR2, IMG.jpg and Lightroom's IMG.xmp (for the RAW, all along), the JPEG's new
    sidecar had none of the person's keywords, and pixdex does not index RAW files: "Grandma" found nothing.
    Now the JPEG's new sidecar starts with them (a copy); IMG.xmp stays byte for byte."""
    jpeg = tmp_path / "IMG_11.jpg"
    solid((1, 2, 3)).save(jpeg)
    (tmp_path / "IMG_11.CR2").write_bytes(b"raw")
    (tmp_path / "IMG_11.xmp").write_text(PERSON_SIDECAR)
    state = write_tags(jpeg, ["cat"], "pixdex", "m")
    assert {p["name"] for p in state.person} == {"Grandma", "dog"}
    assert state.path == bytes(tmp_path / "IMG_11.jpg.xmp")
    for program, keywords in keywords_as_programs_see(exiftool, tmp_path / "IMG_11.jpg.xmp").items():
        assert {"Grandma", "dog", "cat"} <= {leaf(k) for k in keywords}, program
    assert (tmp_path / "IMG_11.xmp").read_text() == PERSON_SIDECAR


def test_a_person_sidecar_of_another_image_with_the_stem_lends_nothing(tmp_path: Path) -> None:
    """Only a RAW's: IMG.png beside IMG.jpg share no keywords through an IMG.xmp pixdex never wrote."""
    jpeg = tmp_path / "IMG_12.jpg"
    solid((1, 2, 3)).save(jpeg)
    solid((3, 2, 1)).save(tmp_path / "IMG_12.png")
    (tmp_path / "IMG_12.xmp").write_text(PERSON_SIDECAR)
    state = write_tags(jpeg, ["cat"], "pixdex", "m")
    assert state.path == bytes(tmp_path / "IMG_12.jpg.xmp") and state.person == []
    assert (tmp_path / "IMG_12.xmp").read_text() == PERSON_SIDECAR


def test_a_raw_arriving_is_noticed_by_the_scanner(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    jpeg = env.pics / "IMG_12.jpg"
    solid((90, 20, 160), size=(96, 72)).save(jpeg)
    (env.pics / "IMG_12.xmp").write_text(PERSON_SIDECAR)
    assert env.index_json(capsys)["failed"] == 0
    (env.pics / "IMG_12.CR2").write_bytes(b"raw")
    summary = env.index_json(capsys)
    assert summary["failed"] == 0 and summary["decoded"] == 0
    assert (env.pics / "IMG_12.jpg.xmp").exists()
    assert paths(search(env, capsys, "tag:Grandma")) == {"IMG_12.jpg"}


# 9. GPS in XMP -------------------------------------------------------------------------------
PARIS, TOKYO = ("48.8566 N", "2.3522 E"), ("35.6762 N", "139.6503 E")


def with_gps(exiftool: str, path: Path, group: str, where: tuple[str, str]) -> None:
    lat, lon = where
    if group == "EXIF":
        run(exiftool, "-q", "-overwrite_original", f"-GPSLatitude={lat[:-2]}", f"-GPSLatitudeRef={lat[-1]}",
            f"-GPSLongitude={lon[:-2]}", f"-GPSLongitudeRef={lon[-1]}", str(path))
    else:
        run(exiftool, "-q", "-overwrite_original", f"-XMP-exif:GPSLatitude={lat}", f"-XMP-exif:GPSLongitude={lon}",
            str(path))


def test_gps_from_xmp_and_from_a_sidecar_is_a_filter(env: Env, exiftool: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for name, seed in (("xmp_only.jpg", 1), ("sidecar_only.jpg", 2), ("both.jpg", 3), ("none.jpg", 4)):
        solid((seed * 40, 80, 120), size=(96, 72)).save(env.pics / name)
    with_gps(exiftool, env.pics / "xmp_only.jpg", "XMP", PARIS)  # the image's own XMP
    geotagged = env.pics / "sidecar_only.jpg.xmp"  # a geotagging tool's sidecar
    geotagged.write_text(PERSON_SIDECAR)
    with_gps(exiftool, geotagged, "XMP", PARIS)
    with_gps(exiftool, env.pics / "both.jpg", "EXIF", PARIS)  # EXIF keeps precedence (MWG) …
    (env.pics / "both.jpg.xmp").write_text(PERSON_SIDECAR)
    with_gps(exiftool, env.pics / "both.jpg.xmp", "XMP", TOKYO)  # … over a sidecar's
    assert env.index_json(capsys)["failed"] == 0
    assert paths(search(env, capsys, "near:48.85,2.35,5")) == {"xmp_only.jpg", "sidecar_only.jpg", "both.jpg"}
    assert paths(search(env, capsys, "near:35.68,139.65,5")) == set()
    rows = {Path(p).name: r for p, r in catalog_rows(env).items()}
    facts = {name: json.loads(str(r["facts"])) for name, r in rows.items()}
    assert abs(facts["xmp_only.jpg"]["lat"] - 48.8566) < 1e-4 and abs(facts["sidecar_only.jpg"]["lon"] - 2.3522) < 1e-4
    own = json.loads(str(rows["xmp_only.jpg"]["embedded"]))  # read from the image's XMP, not only its new sidecar's
    assert own["lat"] == pytest.approx(48.8566) and own["lon"] == pytest.approx(2.3522)
    assert json.loads(str(rows["both.jpg"]["embedded"]))["lat"] == pytest.approx(48.8566)  # EXIF's (pyexiv2)
    with_gps(exiftool, geotagged, "XMP", TOKYO)  # the geotagger corrects it: seen at the next scan
    env.index_json(capsys)
    assert paths(search(env, capsys, "near:35.68,139.65,5")) == {"sidecar_only.jpg"}


def test_xmp_coordinates_in_every_form() -> None:
    from pixdex.indexer.metadata.gps import xmp_coordinate

    assert xmp_coordinate("48,51.4N", "NS", 90) == pytest.approx(48.856667)
    assert xmp_coordinate("48,51,24S", "NS", 90) == pytest.approx(-48.856667)
    assert xmp_coordinate("2,21.132W", "EW", 180) == pytest.approx(-2.3522)
    assert xmp_coordinate("-33.5", "NS", 90) == -33.5
    for bad in ("", "N", "91,0N", "48,-3N", "a,bN", "1,2,3,4N"):
        assert xmp_coordinate(bad, "NS", 90) is None, bad


def test_read_state_of_a_geotagged_sidecar(image: Path, exiftool: str) -> None:
    side = sidecar_path(image)
    side.write_text(PERSON_SIDECAR)
    with_gps(exiftool, side, "XMP", TOKYO)
    state = read_state(image, "pixdex")
    assert state.lat == pytest.approx(35.6762) and state.lon == pytest.approx(139.6503)


# 10. Two writers, one result ---------------------------------------------------------------------
@pytest.mark.parametrize("start", ["from the image", "a person's sidecar", "edited through pixdex"])
def test_both_writers_write_and_read_back_the_same(tmp_path: Path, exiftool: str, monkeypatch: pytest.MonkeyPatch,
                                                   start: str) -> None:
    """Whichever writer a sidecar needs — exiv2, or the RDF/XML editor for what exiv2 cannot keep — pixdex's
    keywords, record, description, text and embedding come out the same, as exiftool and pixdex read them."""
    import dataclasses

    import numpy as np

    from pixdex.indexer.sidecars import embedding, writers
    from pixdex.indexer.sidecars.merge import edit_person

    results = {}
    for writer in ("_exiv2_written", "_rdf_written"):
        folder = tmp_path / writer
        folder.mkdir()
        image = folder / "a.jpg"
        solid((10, 20, 30)).save(image)
        if start == "from the image":
            latin1_iptc(exiftool, image)
        else:
            sidecar_path(image).write_text(PERSON_SIDECAR)
        monkeypatch.setattr(writers, "_WRITERS", (getattr(writers, writer),))
        vector = np.linspace(-1, 1, 8, dtype=np.float32)
        write_tags(image, ["dog", "cat", "AC/DC"], "pixdex", "m@1", description="a dog", text="STOP",
                   embedding=("clip@1", "0123abcd", vector))
        if start == "edited through pixdex":
            edit_person(image, ["Rex", "Trips/Nice"], ["cat"], "Rex in Nice", "pixdex")
            write_tags(image, ["dog", "cat", "bird"], "pixdex", "m@2")
        seen = exif_json(exiftool, sidecar_path(image), "-XMP:all")
        for tag in ("SourceFile", "XMP-xmp:MetadataDate", "XMP-x:XMPToolkit"):
            seen.pop(tag, None)
        state = dataclasses.replace(read_state(image, "pixdex"), path=None, signature=None, digest=None)
        kept = embedding.read_embedding(read_sidecar(sidecar_path(image)), "clip@1", "0123abcd")
        results[writer] = (seen, state, kept)
    (seen_a, state_a, vector_a), (seen_b, state_b, vector_b) = results.values()
    assert seen_a == seen_b and state_a == state_b
    assert np.array_equal(vector_a, vector_b) and vector_a is not None
    assert "XMP-pixdex:Embedding" in seen_a and seen_a["XMP-pixdex:Text"] == "STOP"


def test_the_watcher_notices_a_raw_arriving(tmp_path: Path) -> None:
    """A RAW file is not indexed, but its arrival changes which file is the JPEG's sidecar."""
    import os
    import time

    from pixdex.daemon.watcher import Watcher
    from pixdex.indexer.sections import WatchSettings

    folder = tmp_path / "card"
    folder.mkdir()
    watcher = Watcher(WatchSettings(settle=0.2, debounce=0.05), [], [], [], lambda why: None)
    watcher.watch([os.fsencode(tmp_path)])
    try:
        time.sleep(0.3)
        watcher.take(0.3)
        (folder / "IMG_10.CR2").write_bytes(b"raw")
        taken = watcher.take(3)
        assert taken is not None and os.fsencode(folder) in taken.shallow
    finally:
        watcher.stop()


RDF_OPEN = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">')
RDF_CLOSE = '</rdf:RDF></x:xmpmeta>'
ODD_PACKETS = {
    "attributes only, self-closing": '<rdf:Description rdf:about="" xmp:Rating="3" xmp:Label="Red"/>',
    "an empty Bag": '<rdf:Description rdf:about=""><dc:subject><rdf:Bag/></dc:subject></rdf:Description>',
    "a Seq where pixdex writes a Bag": '<rdf:Description rdf:about=""><dc:subject><rdf:Seq><rdf:li>sea</rdf:li>'
                                       '</rdf:Seq></dc:subject><xmp:Rating>1</xmp:Rating></rdf:Description>',
    "dc:subject in two descriptions": '<rdf:Description rdf:about=""><dc:subject><rdf:Bag><rdf:li>sea</rdf:li>'
                                      '</rdf:Bag></dc:subject></rdf:Description><rdf:Description rdf:about="">'
                                      '<dc:subject><rdf:Bag><rdf:li>sand</rdf:li></rdf:Bag></dc:subject>'
                                      '<xmp:Rating>2</xmp:Rating></rdf:Description>',
    "no description at all": '',
    "descriptions about other names": '<rdf:Description rdf:about="uuid:faf5bdd5"><xmp:Rating>1</xmp:Rating>'
                                      '</rdf:Description><rdf:Description rdf:about="">'
                                      '<dc:subject><rdf:Bag><rdf:li>sea</rdf:li></rdf:Bag></dc:subject>'
                                      '</rdf:Description>',
    "pixdex's namespace under another prefix": '<rdf:Description rdf:about="" xmlns:pd="https://pixdex.dev/ns/1.0/">'
                                               '<pd:Model>old</pd:Model><xmp:Rating>5</xmp:Rating></rdf:Description>',
    "an indented packet": '\n <rdf:Description rdf:about="">\n  <dc:subject>\n   <rdf:Bag>\n    <rdf:li>sea</rdf:li>'
                          '\n   </rdf:Bag>\n  </dc:subject>\n </rdf:Description>\n',
}


@pytest.mark.parametrize("name", list(ODD_PACKETS))
def test_the_rdf_xml_editor_on_odd_layouts(name: str, image: Path, exiftool: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pixdex.indexer.sidecars import keys, writers
    from pixdex.indexer.sidecars.graph import changed_triples

    monkeypatch.setattr(writers, "_WRITERS", (writers._rdf_written,))
    side = sidecar_path(image)
    side.write_text(RDF_OPEN + ODD_PACKETS[name] + RDF_CLOSE)
    original = side.read_bytes()
    before = {k: v for k, v in exif_json(exiftool, side, "-XMP:all").items()
              if k != "XMP-dc:Subject" and not k.endswith(":Model")}  # pixdex's own, under another prefix
    theirs = set(as_list(exif_json(exiftool, side, "-XMP-dc:Subject").get("XMP-dc:Subject"))) - {""}
    if name == "dc:subject in two descriptions":  # exiftool shows one of them only; both are the person's
        theirs = {"sea", "sand"}
    write_tags(image, ["dog"], "pixdex", "m")
    edit_back = write_tags(image, ["dog", "cat"], "pixdex", "m2")  # and over its own result
    seen = exif_json(exiftool, side, "-XMP:all")
    assert set(as_list(seen["XMP-dc:Subject"])) == theirs | {"dog", "cat"}  # every keyword, once
    assert side.read_text().count("dc:subject>") == 2  # in one place (an opening and a closing tag)
    assert {k: v for k, v in seen.items() if k in before} == before
    assert [v for k, v in seen.items() if k.endswith(":Model")] == ["m2"] and edit_back.error is None
    owned = [*(keys.URIS[k] for k in (keys.SUBJECT, keys.HIERARCHICAL, keys.TAGS_LIST, keys.METADATA_DATE)),
             keys.PIXDEX_NS + "*"]
    assert changed_triples(original, side.read_bytes(), owned) == []


def test_an_upper_case_sidecar_moves_with_its_image_and_keeps_its_case(tmp_path: Path) -> None:
    from pixdex.indexer.sidecars.moves import carry_over

    for old_side, new_side in (("a.XMP", "b.XMP"), ("a.jpg.XMP", "b.jpg.XMP")):
        image = tmp_path / "a.jpg"
        solid((1, 2, 3)).save(image)
        (tmp_path / old_side).write_text(PERSON_SIDECAR)
        image.rename(tmp_path / "b.jpg")
        assert carry_over(image, tmp_path / "b.jpg") == tmp_path / new_side
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b.jpg", new_side])
        for path in tmp_path.iterdir():
            path.unlink()
