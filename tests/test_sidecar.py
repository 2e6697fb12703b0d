"""XMP sidecars: every keyword where each program reads it, a person's edits respected, the RDF graph
kept, identity kept. Real pyexiv2, real exiftool and exiv2 programs playing the other program."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import CORPUS, solid

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.sidecars import embedding, keys, merge, writers
from pixdex.indexer.sidecars.graph import changed_triples
from pixdex.indexer.sidecars.merge import edit_person, write_tags
from pixdex.indexer.sidecars.moves import carry_over
from pixdex.indexer.sidecars.naming import sidecar_path
from pixdex.indexer.sidecars.read import read_sidecar, read_state

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/exiftool is not beside the checkout")


def exif_json(exiftool: str, path: Path, *tags: str) -> dict[str, object]:
    out = subprocess.run([exiftool, "-j", "-G1", "-a", "-struct", *tags, str(path)], capture_output=True,
                         text=True, check=True).stdout
    return dict(json.loads(out)[0])


def as_list(value: object) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def keywords_as_programs_see(exiftool: str, side: Path) -> dict[str, list[str]]:
    """The keyword list each program would show, by its own precedence, read by exiftool."""
    seen = exif_json(exiftool, side, "-XMP:all")
    tags_list, hierarchical = as_list(seen.get("XMP-digiKam:TagsList")), as_list(seen.get("XMP-lr:HierarchicalSubject"))
    last, subject = as_list(seen.get("XMP-microsoft:LastKeywordXMP")), as_list(seen.get("XMP-dc:Subject"))
    return {
        "digikam": tags_list or last or hierarchical or subject,
        "darktable": hierarchical or subject,
        "immich": tags_list or hierarchical or subject,
        "subject": subject,
    }


def leaf(entry: str) -> str:
    return entry.replace("|", "/").split("/")[-1]


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "IMG_0001.jpg"
    solid((10, 20, 30)).save(path)
    return path


def test_new_sidecar_holds_tags_in_the_three_places_programs_read(image: Path, exiftool: str) -> None:
    state = write_tags(image, ["dog", "long hair"], "pixdex", "model@1")
    side = sidecar_path(image)
    assert state.path == os.fsencode(side) and side.name == "IMG_0001.jpg.xmp"
    seen = exif_json(exiftool, side)
    assert seen["XMP-dc:Subject"] == ["dog", "long hair"]
    assert seen["XMP-lr:HierarchicalSubject"] == ["pixdex|dog", "pixdex|long hair"]
    assert seen["XMP-digiKam:TagsList"] == ["pixdex/dog", "pixdex/long hair"]
    assert "XMP-xmp:MetadataDate" in seen
    text = side.read_text()
    assert text.split("<digiKam:TagsList>")[1].split("</")[0].strip().startswith("<rdf:Seq>")  # as digiKam defines it
    for prop in ("dc:subject", "lr:hierarchicalSubject"):
        assert text.split(f"<{prop}>")[1].split("</")[0].strip().startswith("<rdf:Bag>")
    warnings = subprocess.run([exiftool, "-validate", "-warning", "-a", str(side)], capture_output=True, text=True)
    assert "incorrect list type" not in warnings.stdout.lower()


def test_no_tags_and_no_sidecar_writes_nothing(image: Path) -> None:
    assert write_tags(image, [], "pixdex", "m").path is None
    assert not sidecar_path(image).exists()


def test_slash_and_bar_in_a_name_do_not_make_levels(image: Path, exiftool: str) -> None:
    write_tags(image, ["AC/DC", "black|white"], "pixdex", "m")
    seen = exif_json(exiftool, sidecar_path(image))
    assert seen["XMP-dc:Subject"] == ["AC/DC", "black|white"]  # flat: the name as it is
    assert seen["XMP-lr:HierarchicalSubject"] == ["pixdex|AC\u2215DC", "pixdex|black\u00a6white"]
    assert seen["XMP-digiKam:TagsList"] == ["pixdex/AC\u2215DC", "pixdex/black\u00a6white"]
    assert [t["name"] for t in read_state(image, "pixdex").person] == []  # still pixdex's, not a person's


PERSON_SIDECAR = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/" '
    'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4">'
    '<dc:subject><rdf:Bag><rdf:li>Grandma</rdf:li><rdf:li>dog</rdf:li></rdf:Bag></dc:subject>'
    '<lr:hierarchicalSubject><rdf:Bag><rdf:li>People|Grandma</rdf:li></rdf:Bag></lr:hierarchicalSubject>'
    '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Our garden, 1998</rdf:li></rdf:Alt>'
    '</dc:description></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def test_person_keywords_reach_every_field_and_machine_ones_are_replaced(image: Path, exiftool: str) -> None:
    side = sidecar_path(image)
    side.write_text(PERSON_SIDECAR)
    write_tags(image, ["dog", "cat"], "pixdex", "m@1")
    xmp = read_sidecar(side)
    assert xmp["Xmp.dc.subject"] == ["Grandma", "dog", "cat"]
    assert xmp["Xmp.pixdex.Tags"] == ["cat"]  # "dog" was the person's already: never doubled
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["People|Grandma", "dog", "pixdex|cat"]
    assert xmp["Xmp.digiKam.TagsList"] == ["People/Grandma", "dog", "pixdex/cat"]
    write_tags(image, ["bird"], "pixdex", "m@2")
    xmp = read_sidecar(side)
    assert xmp["Xmp.dc.subject"] == ["Grandma", "dog", "bird"]
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["People|Grandma", "dog", "pixdex|bird"]
    assert xmp["Xmp.xmp.Rating"] == "4"
    assert xmp["Xmp.dc.description"] == {'lang="x-default"': "Our garden, 1998"}
    for program, keywords in keywords_as_programs_see(exiftool, side).items():
        assert {"Grandma", "dog"} <= {leaf(k) for k in keywords}, program


def test_a_removed_machine_tag_is_rejected_and_never_comes_back(image: Path, exiftool: str) -> None:
    side = sidecar_path(image)
    write_tags(image, ["dog", "cat"], "pixdex", "m@1")
    # A person removes "dog" with exiftool, from dc:subject only (as a tool that knows one field would).
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject-=dog", str(side)], check=True,
                   capture_output=True)
    state = write_tags(image, ["dog", "cat", "bird"], "pixdex", "m@2")  # re-tagging, or a new model
    assert state.rejected == ["dog"]
    for program, keywords in keywords_as_programs_see(exiftool, side).items():
        assert "dog" not in {leaf(k) for k in keywords}, program
        assert {"cat", "bird"} <= {leaf(k) for k in keywords}, program
    write_tags(image, ["dog"], "pixdex", "m@3")
    assert "dog" not in {leaf(k) for k in as_list(exif_json(exiftool, side).get("XMP-digiKam:TagsList"))}
    # Added back by hand, it is the person's: kept, never doubled, never removed by pixdex.
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject+=dog", str(side)], check=True,
                   capture_output=True)
    state = write_tags(image, ["dog", "cat"], "pixdex", "m@4")
    assert {"name": "dog"} in state.person
    seen = exif_json(exiftool, side)
    assert as_list(seen["XMP-dc:Subject"]).count("dog") == 1
    hierarchical = seen["XMP-lr:HierarchicalSubject"]
    assert "dog" in as_list(hierarchical) and "pixdex|dog" not in hierarchical
    write_tags(image, [], "pixdex", "m@5")
    assert "dog" in as_list(exif_json(exiftool, side)["XMP-dc:Subject"])


def test_a_machine_tag_removed_in_digikam_style_is_rejected(image: Path, exiv2: str) -> None:
    side = sidecar_path(image)
    write_tags(image, ["dog", "cat"], "pixdex", "m@1")
    # digiKam removes it from TagsList (the field it reads first); exiv2 plays it here.
    subprocess.run([exiv2, "-M", "del Xmp.digiKam.TagsList", "-M", "set Xmp.digiKam.TagsList XmpSeq pixdex/cat",
                    str(side)], check=True, capture_output=True)
    state = write_tags(image, ["dog", "cat"], "pixdex", "m@2")
    assert state.rejected == ["dog"]
    assert "dog" not in read_sidecar(side)["Xmp.dc.subject"]


def test_description_written_only_when_empty_or_still_pixdexs(image: Path, exiftool: str) -> None:
    side = sidecar_path(image)
    write_tags(image, ["dog"], "pixdex", "m", description="a dog on a lawn")
    assert read_sidecar(side)["Xmp.dc.description"] == {'lang="x-default"': "a dog on a lawn"}
    write_tags(image, ["dog"], "pixdex", "m", description="a brown dog on a lawn")  # still pixdex's: updated
    assert read_sidecar(side)["Xmp.dc.description"] == {'lang="x-default"': "a brown dog on a lawn"}
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Description=Rex, summer 2019", str(side)],
                   check=True, capture_output=True)
    write_tags(image, ["dog"], "pixdex", "m", description="a dog")
    assert read_sidecar(side)["Xmp.dc.description"] == {'lang="x-default"': "Rex, summer 2019"}


def test_a_person_edit_through_pixdex_rejects_removed_machine_tags(image: Path) -> None:
    write_tags(image, ["dog", "cat"], "pixdex", "m")
    state = edit_person(image, ["Rex"], ["dog"], None, "pixdex")
    assert state.rejected == ["dog"]
    assert {"name": "Rex"} in state.person
    write_tags(image, ["dog", "cat"], "pixdex", "m")
    xmp = read_sidecar(sidecar_path(image))
    assert "dog" not in xmp["Xmp.dc.subject"] and "Rex" in xmp["Xmp.dc.subject"]
    assert "Rex" in xmp["Xmp.digiKam.TagsList"]


@needs_corpus
@pytest.mark.parametrize("name", ["IPTC.jpg", "XMP.jpg", "MWG.jpg", "PhotoMechanic.jpg", "ExifTool.jpg",
                                  "ExifTool.tif"])
def test_new_sidecar_starts_from_the_images_own_keywords(name: str, tmp_path: Path, exiftool: str) -> None:
    image = tmp_path / name
    shutil.copyfile(CORPUS / name, image)
    own = exif_json(exiftool, image, "-use", "MWG", "-MWG:Keywords", "-MWG:Description")
    keywords = as_list(own.get("MWG:Keywords"))
    assert keywords
    write_tags(image, ["pixdexmachinetag"], "pixdex", "m")
    side = sidecar_path(image)
    for program, seen in keywords_as_programs_see(exiftool, side).items():
        leaves = [leaf(k) for k in seen]
        assert set(keywords) <= set(leaves), program
        assert "pixdexmachinetag" in leaves, program
        assert not [k for k in leaves if "WRONG" in k], program  # MWG: what XMP overrides is not taken
    described = exif_json(exiftool, side, "-XMP-dc:Description").get("XMP-dc:Description")
    assert described == own.get("MWG:Description")


CORPUS_XMP = sorted(p.name for p in CORPUS.glob("*.xmp")) if CORPUS.is_dir() else []
OWNED_TAGS = {"XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList", "XMP-xmp:MetadataDate",
              "XMP-x:XMPToolkit", "SourceFile"}


def others_view(exiftool: str, side: Path) -> dict[str, object]:
    """Everything exiftool reads in a sidecar but what pixdex owns (and the toolkit name a writer stamps)."""
    seen = exif_json(exiftool, side, "-XMP:all")
    return {k: v for k, v in seen.items() if k not in OWNED_TAGS and not k.startswith("XMP-pixdex:")}


@needs_corpus
@pytest.mark.parametrize("name", CORPUS_XMP)
def test_every_corpus_sidecar_gets_pixdexs_tags_and_keeps_everything_else(name: str, image: Path,
                                                                           exiftool: str) -> None:
    side = sidecar_path(image)
    shutil.copyfile(CORPUS / name, side)
    original = side.read_bytes()
    before = others_view(exiftool, side)
    state = write_tags(image, ["dog", "sunset"], "pixdex", "m@1")
    written = side.read_bytes()
    assert written != original and state.error is None
    owned = [*(keys.URIS[k] for k in (keys.SUBJECT, keys.HIERARCHICAL, keys.TAGS_LIST, keys.METADATA_DATE)),
             keys.PIXDEX_NS + "*"]
    assert changed_triples(original, written, owned) == []  # the RDF graph outside pixdex's properties
    assert others_view(exiftool, side) == before  # and every value exiftool shows
    # Every keyword and caption exiftool saw in it is still the person's, and pixdex's are where programs look.
    seen = exif_json(exiftool, CORPUS / name, "-XMP:all")
    keywords = {leaf(k) for key in ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList")
                for k in as_list(seen.get(key))}
    assert state.readable and keywords <= {p["name"] for p in state.person}
    for program, found in keywords_as_programs_see(exiftool, side).items():
        assert {"dog", "sunset"} | keywords <= {leaf(k) for k in found}, program
    for key in ("XMP-dc:Title", "XMP-dc:Description"):
        value = seen.get(key)
        if isinstance(value, str) and value.strip():
            assert value in state.text, key
    assert read_state(image, "pixdex") == state  # read back as written
    write_tags(image, ["dog"], "pixdex", "m@2")  # and written again over its own result
    assert "sunset" not in read_sidecar(side)["Xmp.dc.subject"]
    assert changed_triples(original, side.read_bytes(), owned) == []


@needs_corpus
@pytest.mark.parametrize("name", ["XMP2.xmp", "XMP3.xmp", "XMP5.xmp", "XMP6.xmp", "XMP9.xmp"])
def test_what_exiv2_cannot_rewrite_is_edited_as_rdf_xml(name: str, image: Path) -> None:
    """exiv2's rewrite of these would change what pixdex does not own (or exiv2 refuses them): the graph check
    catches it, and the RDF/XML editor writes them instead."""
    side = sidecar_path(image)
    shutil.copyfile(CORPUS / name, side)
    data = side.read_bytes()
    values = {keys.SUBJECT: ["dog"], keys.MODEL: "m"}
    with pytest.raises(SidecarError):
        writers.check_graph(side, data, writers._exiv2_written(side, data, values), list(values))
    writers.check_graph(side, data, writers._rdf_written(side, data, values), list(values))
    write_tags(image, ["dog"], "pixdex", "m")
    assert "dog" in read_sidecar(side)["Xmp.dc.subject"]


def test_a_node_id_sidecar_gets_keywords_in_its_own_container(image: Path) -> None:
    side = sidecar_path(image)
    # rdf:nodeID: legal RDF that exiv2 drops; pixdex adds its keyword into the Bag the node ID names.
    side.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:subject rdf:nodeID="k"/>'
        '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Cape Kiwanda</rdf:li></rdf:Alt></dc:title>'
        '<dc:rights rdf:nodeID="r1"/></rdf:Description>'
        '<rdf:Bag rdf:nodeID="k"><rdf:li>lighthouse</rdf:li></rdf:Bag>'
        '<rdf:Description rdf:nodeID="r1" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:source>x</dc:source>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>')
    original = side.read_bytes()
    state = write_tags(image, ["dog"], "pixdex", "m")
    text = side.read_text()
    assert '<rdf:Bag rdf:nodeID="k"><rdf:li>lighthouse</rdf:li><rdf:li>dog</rdf:li></rdf:Bag>' in text
    assert changed_triples(original, side.read_bytes(), [keys.URIS[keys.SUBJECT], keys.URIS[keys.HIERARCHICAL],
                                                          keys.URIS[keys.TAGS_LIST], keys.URIS[keys.METADATA_DATE],
                                                          keys.PIXDEX_NS + "*"]) == []
    assert state.readable and state.error is None
    assert {"name": "lighthouse"} in state.person
    assert "Cape Kiwanda" in state.text


def test_garbage_sidecar_is_left_untouched(image: Path) -> None:
    side = sidecar_path(image)
    side.write_bytes(b"<x:xmpmeta><rdf:RDF><broken")
    with pytest.raises(SidecarError):
        write_tags(image, ["dog"], "pixdex", "m")
    assert side.read_bytes() == b"<x:xmpmeta><rdf:RDF><broken"
    assert not read_state(image, "pixdex").readable


# Identity -------------------------------------------------------------------------------------
def test_write_is_atomic_and_keeps_mode_and_xattrs(image: Path) -> None:
    side = sidecar_path(image)
    write_tags(image, ["dog"], "pixdex", "m")
    side.chmod(0o664)
    old_umask = os.umask(0o077)
    try:
        os.setxattr(side, "user.origin", b"camera card")
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    try:
        inode = side.stat().st_ino
        write_tags(image, ["cat"], "pixdex", "m")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(side.stat().st_mode) == 0o664  # group bits too, whatever the umask
    assert os.getxattr(side, "user.origin") == b"camera card"
    assert side.stat().st_ino != inode  # replaced by rename, never truncated in place
    assert sorted(p.name for p in image.parent.iterdir()) == ["IMG_0001.jpg", "IMG_0001.jpg.xmp"]


def test_symlinked_sidecar_is_written_through(image: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    real = store / "shared.xmp"
    real.write_text(PERSON_SIDECAR)
    side = sidecar_path(image)
    side.symlink_to(real)
    write_tags(image, ["cat"], "pixdex", "m")
    assert side.is_symlink() and os.readlink(side) == str(real)
    assert "cat" in read_sidecar(real)["Xmp.dc.subject"]


def test_hardlinked_and_read_only_sidecars_are_refused(image: Path, tmp_path: Path) -> None:
    side = sidecar_path(image)
    side.write_text(PERSON_SIDECAR)
    os.link(side, tmp_path / "other.xmp")
    with pytest.raises(SidecarError, match="hard links"):
        write_tags(image, ["cat"], "pixdex", "m")
    (tmp_path / "other.xmp").unlink()
    side.chmod(0o444)
    with pytest.raises(SidecarError, match="read-only"):
        write_tags(image, ["cat"], "pixdex", "m")
    assert side.read_text() == PERSON_SIDECAR


def test_a_concurrent_edit_between_read_and_rename_is_kept(image: Path, exiftool: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    side = sidecar_path(image)
    write_tags(image, ["dog"], "pixdex", "m")
    edits = []

    def someone_writes(path: Path) -> None:
        if not edits:
            edits.append(path)
            subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject+=Rex", "-XMP-xmp:Rating=5", str(path)],
                           check=True, capture_output=True)

    monkeypatch.setattr(merge, "_before_replace", someone_writes)
    write_tags(image, ["dog", "cat"], "pixdex", "m")
    xmp = read_sidecar(side)
    assert edits and "Rex" in xmp["Xmp.dc.subject"] and xmp["Xmp.xmp.Rating"] == "5"
    assert "cat" in xmp["Xmp.dc.subject"]
    assert "Rex" in xmp["Xmp.digiKam.TagsList"]


def test_unchanged_tags_do_not_rewrite(image: Path) -> None:
    write_tags(image, ["dog"], "pixdex", "m")
    side = sidecar_path(image)
    inode = side.stat().st_ino
    write_tags(image, ["dog"], "pixdex", "m")
    assert side.stat().st_ino == inode


def test_read_only_folder_gives_a_sidecar_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    image = folder / "a.jpg"
    solid((1, 2, 3)).save(image)
    folder.chmod(0o555)
    try:
        with pytest.raises(SidecarError, match="cannot write sidecar"):
            write_tags(image, ["dog"], "pixdex", "m")
    finally:
        folder.chmod(0o755)


def test_non_utf8_and_korean_names(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"\xff\xfeodd.jpg")
    with open(raw, "wb") as handle:
        solid((1, 2, 3)).save(handle, format="JPEG")
    write_tags(Path(os.fsdecode(raw)), ["dog"], "pixdex", "m")
    assert read_sidecar(Path(os.fsdecode(raw + b".xmp")))["Xmp.dc.subject"] == ["dog"]
    korean = tmp_path / "서울" / "한강 야경.jpg"
    korean.parent.mkdir()
    solid((1, 2, 3)).save(korean)
    edit_person(korean, ["야경", "가족/여행"], [], None, "pixdex")
    state = write_tags(korean, ["강아지"], "pixdex", "m")
    assert [p["name"] for p in state.person] == ["야경", "가족/여행"]
    xmp = read_sidecar(sidecar_path(korean))
    assert xmp["Xmp.digiKam.TagsList"] == ["야경", "가족\u2215여행", "pixdex/강아지"]


# Naming ---------------------------------------------------------------------------------------
def test_an_existing_adobe_style_sidecar_is_used_and_no_second_one_created(image: Path) -> None:
    adobe = image.with_name("IMG_0001.xmp")
    adobe.write_text(PERSON_SIDECAR)
    write_tags(image, ["cat"], "pixdex", "m")
    assert not image.with_name("IMG_0001.jpg.xmp").exists()
    assert "cat" in read_sidecar(adobe)["Xmp.dc.subject"]


def test_raw_and_jpeg_pairs_never_share_one_sidecar(tmp_path: Path) -> None:
    jpeg = tmp_path / "IMG_1.JPG"
    solid((1, 2, 3)).save(jpeg, format="JPEG")
    (tmp_path / "IMG_1.CR2").write_bytes(b"raw")
    adobe = tmp_path / "IMG_1.xmp"  # Lightroom's, for the RAW
    adobe.write_text(PERSON_SIDECAR)
    write_tags(jpeg, ["cat"], "pixdex", "m", naming="image.xmp")
    assert "cat" not in read_sidecar(adobe).get("Xmp.dc.subject", [])
    assert "cat" in read_sidecar(tmp_path / "IMG_1.JPG.xmp")["Xmp.dc.subject"]


def test_adobe_naming_by_config(image: Path) -> None:
    write_tags(image, ["cat"], "pixdex", "m", naming="image.xmp")
    assert image.with_name("IMG_0001.xmp").exists() and not image.with_name("IMG_0001.jpg.xmp").exists()


def test_a_person_keyword_removed_darktable_style_stays_removed(image: Path, exiftool: str) -> None:
    side = sidecar_path(image)
    side.write_text(PERSON_SIDECAR)
    write_tags(image, ["cat"], "pixdex", "m")  # "dog" (the person's) now in TagsList too
    assert "dog" in read_sidecar(side)["Xmp.digiKam.TagsList"]
    # darktable edits dc:subject and lr:hierarchicalSubject only.
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject-=dog", "-XMP-lr:HierarchicalSubject-=dog",
                    str(side)], check=True, capture_output=True)
    assert "dog" not in [p["name"] for p in read_state(image, "pixdex").person]
    write_tags(image, ["cat"], "pixdex", "m")
    for program, keywords in keywords_as_programs_see(exiftool, side).items():
        assert "dog" not in {leaf(k) for k in keywords}, program
        assert "Grandma" in {leaf(k) for k in keywords}, program


def test_a_machine_keyword_the_person_had_is_rejected_when_they_remove_it(image: Path, exiftool: str) -> None:
    side = sidecar_path(image)
    side.write_text(PERSON_SIDECAR.replace("People|Grandma", "Nature|tree").replace(">Grandma<", ">tree<"))
    write_tags(image, ["tree", "Dog"], "pixdex", "m")  # both the person's already ("dog" in another case)
    xmp = read_sidecar(side)
    hierarchical = xmp["Xmp.lr.hierarchicalSubject"]
    assert "pixdex|tree" not in hierarchical and "pixdex|Dog" not in hierarchical
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject-=tree",
                    "-XMP-lr:HierarchicalSubject-=Nature|tree",
                    "-XMP-digiKam:TagsList-=Nature/tree", str(side)], check=True, capture_output=True)
    state = write_tags(image, ["tree", "Dog"], "pixdex", "m")
    assert "tree" in state.rejected
    assert "tree" not in {leaf(k) for k in keywords_as_programs_see(exiftool, side)["digikam"]}


def test_a_relative_symlinked_sidecar_moves_as_a_working_link(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "store" / "kept.xmp").write_text(PERSON_SIDECAR)
    image = tmp_path / "a" / "x.jpg"
    solid((1, 2, 3)).save(image)
    sidecar_path(image).symlink_to("../store/kept.xmp")
    moved = tmp_path / "b" / "deep" / "x.jpg"
    image.rename(moved)
    new = carry_over(image, moved)
    assert new == sidecar_path(moved) and new.is_symlink() and not os.path.isabs(os.readlink(new))
    assert "Grandma" in read_sidecar(new)["Xmp.dc.subject"]
    assert not os.path.lexists(sidecar_path(image))


def test_other_files_with_the_same_stem_do_not_take_an_adobe_sidecar(tmp_path: Path) -> None:
    image = tmp_path / "s.jpg"
    solid((1, 2, 3)).save(image)
    (tmp_path / "s.xmp").write_text(PERSON_SIDECAR)
    (tmp_path / "s.txt").write_text("notes")
    (tmp_path / "s.MOV").write_bytes(b"live photo")
    assert sidecar_path(image) == tmp_path / "s.xmp"
    (tmp_path / "s.NEF").write_bytes(b"raw")
    assert sidecar_path(image) == tmp_path / "s.jpg.xmp"


@needs_corpus
def test_every_corpus_image_with_keywords_gets_them_in_all_three_fields(tmp_path: Path, exiftool: str) -> None:
    """Each corpus image whose own metadata has keywords (by the MWG rules, as exiftool reads them): the
    sidecar pixdex creates holds every one of them where digiKam, darktable and Immich each look."""
    images = sorted(p for p in CORPUS.iterdir() if p.suffix.lower() in (".jpg", ".tif", ".png", ".webp", ".heic"))
    listing = json.loads(subprocess.run([exiftool, "-j", "-use", "MWG", "-MWG:Keywords", *map(str, images)],
                                        capture_output=True, text=True).stdout)
    with_keywords = {Path(entry["SourceFile"]).name: as_list(entry["Keywords"]) for entry in listing
                     if entry.get("Keywords")}
    assert len(with_keywords) >= 5
    problems = []
    for name, keywords in with_keywords.items():
        image = tmp_path / name
        shutil.copyfile(CORPUS / name, image)
        try:
            write_tags(image, ["pixdexmachinetag"], "pixdex", "m")
        except SidecarError as exc:
            problems.append(f"{name}: refused: {exc.reason}")
            continue
        if image.read_bytes() != (CORPUS / name).read_bytes():
            problems.append(f"{name}: the image itself changed")
        for program, seen in keywords_as_programs_see(exiftool, sidecar_path(image)).items():
            missing = set(map(str, keywords)) - {leaf(k) for k in seen}
            if missing:
                problems.append(f"{name}: {program} misses {sorted(missing)}")
    assert problems == []


def test_owner_and_group_are_kept_when_the_process_may_set_them(image: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may give a file to another owner")
    side = sidecar_path(image)
    write_tags(image, ["dog"], "pixdex", "m")
    os.chown(side, 1234, 2345)
    write_tags(image, ["cat"], "pixdex", "m")
    assert (side.stat().st_uid, side.stat().st_gid) == (1234, 2345)
    assert "cat" in read_sidecar(side)["Xmp.dc.subject"]


@pytest.mark.parametrize("value", ["f16:x:abc:AAAA", "garbage", "f16:2:00:!!!", "", "f32:1:00:AAAA", "f16:99999:0:"])
def test_a_malformed_embedding_is_no_embedding_never_an_error(value: str) -> None:
    xmp = {keys.EMBEDDING: value, keys.EMBEDDING_MODEL: "m", keys.EMBEDDING_OF: "h"}
    assert embedding.read_embedding(xmp, "m", "h") is None


def test_an_adobe_style_sidecar_moves_with_its_image_and_keeps_its_style(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    solid((1, 2, 3)).save(image)
    (tmp_path / "a.xmp").write_text(PERSON_SIDECAR)
    image.rename(tmp_path / "b.jpg")  # the image is gone from its old name when the sidecar follows
    assert carry_over(image, tmp_path / "b.jpg") == tmp_path / "b.xmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jpg", "b.xmp"]


def test_a_jpeg_moved_away_from_its_raw_leaves_the_raws_sidecar(tmp_path: Path) -> None:
    jpeg = tmp_path / "IMG_1.JPG"
    solid((1, 2, 3)).save(jpeg, format="JPEG")
    (tmp_path / "IMG_1.CR2").write_bytes(b"raw")
    (tmp_path / "IMG_1.xmp").write_text(PERSON_SIDECAR)  # Lightroom's, for the RAW
    (tmp_path / "elsewhere").mkdir()
    jpeg.rename(tmp_path / "elsewhere" / "IMG_1.JPG")
    assert carry_over(jpeg, tmp_path / "elsewhere" / "IMG_1.JPG") is None
    assert (tmp_path / "IMG_1.xmp").read_text() == PERSON_SIDECAR
