"""XMP sidecars: written where digiKam/darktable/Lightroom/exiftool look, merged without losing
anything a person (or another program) wrote, replaced atomically. Real pyexiv2, real exiftool."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pyexiv2
import pytest

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.sidecar import read_sidecar, sidecar_path, write_tags

from conftest import CORPUS, solid

OUR_KEYS = {"XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList", "XMP-pixdex:Tags",
            "XMP-pixdex:Model", "XMP-x:XMPToolkit"}


@pytest.fixture(scope="session")
def exiftool() -> str:
    found = shutil.which("exiftool")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-q", "libimage-exiftool-perl"]
        if subprocess.run(install, capture_output=True).returncode != 0:  # a fresh machine has no lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(install, capture_output=True)
        found = shutil.which("exiftool")
    if found is None:
        pytest.skip("exiftool is not installed (Debian package libimage-exiftool-perl)")
    return found


def exif_json(exiftool: str, path: Path) -> dict[str, object]:
    out = subprocess.run([exiftool, "-j", "-G1", "-a", "-struct", str(path)], capture_output=True, text=True,
                         check=True).stdout
    data = dict(json.loads(out)[0])
    for key in ("SourceFile", "ExifTool:ExifToolVersion", "System:FileName", "System:Directory", "System:FileSize",
                "System:FileModifyDate", "System:FileAccessDate", "System:FileInodeChangeDate",
                "System:FilePermissions", "File:FileType", "File:FileTypeExtension", "File:MIMEType"):
        data.pop(key, None)
    return data


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "IMG_0001.jpg"
    solid((10, 20, 30)).save(path)
    return path


def test_new_sidecar_holds_tags_in_the_three_places_programs_read(image: Path, exiftool: str) -> None:
    written = write_tags(image, ["dog", "long hair"], "pixdex", "model@1")
    assert written == sidecar_path(image) == image.with_name("IMG_0001.jpg.xmp")
    xmp = read_sidecar(written)
    assert xmp["Xmp.dc.subject"] == ["dog", "long hair"]
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["pixdex|dog", "pixdex|long hair"]
    assert xmp["Xmp.digiKam.TagsList"] == ["pixdex/dog", "pixdex/long hair"]
    seen = exif_json(exiftool, written)
    assert seen["XMP-dc:Subject"] == ["dog", "long hair"]
    assert seen["XMP-lr:HierarchicalSubject"] == ["pixdex|dog", "pixdex|long hair"]
    assert seen["XMP-digiKam:TagsList"] == ["pixdex/dog", "pixdex/long hair"]
    text = written.read_text()
    for prop in ("dc:subject", "lr:hierarchicalSubject", "digiKam:TagsList"):  # unordered, as the specs say
        assert text.split(f"<{prop}>")[1].split("</")[0].strip().startswith("<rdf:Bag>")


def test_no_tags_and_no_sidecar_writes_nothing(image: Path) -> None:
    assert write_tags(image, [], "pixdex", "m") is None
    assert not sidecar_path(image).exists()


def test_rewrite_replaces_only_what_pixdex_added(image: Path) -> None:
    side = sidecar_path(image)
    side.write_text(
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4">'
        '<dc:subject><rdf:Bag><rdf:li>Grandma</rdf:li><rdf:li>dog</rdf:li></rdf:Bag></dc:subject>'
        '<lr:hierarchicalSubject><rdf:Bag><rdf:li>People|Grandma</rdf:li></rdf:Bag></lr:hierarchicalSubject>'
        '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Our garden, 1998</rdf:li></rdf:Alt>'
        '</dc:description></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')
    write_tags(image, ["dog", "cat"], "pixdex", "m@1")
    xmp = read_sidecar(side)
    assert xmp["Xmp.dc.subject"] == ["Grandma", "dog", "cat"]
    assert xmp["Xmp.pixdex.Tags"] == ["cat"]  # "dog" was the person's already
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["People|Grandma", "pixdex|dog", "pixdex|cat"]
    write_tags(image, ["bird"], "pixdex", "m@2")
    xmp = read_sidecar(side)
    assert xmp["Xmp.dc.subject"] == ["Grandma", "dog", "bird"]
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["People|Grandma", "pixdex|bird"]
    assert xmp["Xmp.digiKam.TagsList"] == ["pixdex/bird"]
    assert xmp["Xmp.xmp.Rating"] == "4"
    assert xmp["Xmp.dc.description"] == {'lang="x-default"': "Our garden, 1998"}
    assert xmp["Xmp.pixdex.Model"] == "m@2"
    write_tags(image, [], "pixdex", "m@3")
    xmp = read_sidecar(side)
    assert xmp["Xmp.dc.subject"] == ["Grandma", "dog"]
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["People|Grandma"]


READABLE = ["PLUS.xmp", "XMP.xmp", "XMP4.xmp", "XMP5.xmp", "XMP7.xmp", "XMP8.xmp"]


needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/exiftool is not beside the checkout")


@needs_corpus
@pytest.mark.parametrize("name", READABLE)
def test_merge_keeps_every_property_of_real_sidecars(name: str, image: Path, exiftool: str) -> None:
    side = sidecar_path(image)
    shutil.copyfile(CORPUS / name, side)
    before_xmp = read_sidecar(side)
    before = exif_json(exiftool, side)
    write_tags(image, ["dog", "sunset"], "pixdex", "m@1")
    after_xmp = read_sidecar(side)
    for key, value in before_xmp.items():
        if key not in ("Xmp.dc.subject", "Xmp.lr.hierarchicalSubject", "Xmp.digiKam.TagsList"):
            assert after_xmp[key] == value, key
    after = exif_json(exiftool, side)
    for key, value in before.items():
        if key not in OUR_KEYS:
            assert after.get(key) == value, f"{name}: {key} changed from {value!r} to {after.get(key)!r}"
    for key in ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject"):
        old = before.get(key, [])
        old = old if isinstance(old, list) else [old]
        new = after[key] if isinstance(after[key], list) else [after[key]]
        assert new[: len(old)] == old  # the person's entries first and intact
    assert "dog" in after["XMP-dc:Subject"]


@needs_corpus
@pytest.mark.parametrize("name, why", [("XMP2.xmp", "rdf:nodeID"), ("XMP6.xmp", "not valid XMP"),
                                       ("XMP9.xmp", "without changing Xmp.plus.Custom1"),
                                       ("XMP3.xmp", "rdf:nodeID")])
def test_sidecar_exiv2_cannot_round_trip_is_left_untouched(name: str, why: str, image: Path) -> None:
    # XMP6: exiv2 refuses to parse it; XMP9: exiv2 would drop an empty lang-alt entry;
    # XMP2/XMP3: RDF node references, which exiv2 would flatten away.
    side = sidecar_path(image)
    shutil.copyfile(CORPUS / name, side)
    original = side.read_bytes()
    with pytest.raises(SidecarError, match=why):
        write_tags(image, ["dog"], "pixdex", "m")
    assert side.read_bytes() == original


def test_garbage_sidecar_is_left_untouched(image: Path) -> None:
    side = sidecar_path(image)
    side.write_bytes(b"<x:xmpmeta><rdf:RDF><broken")
    with pytest.raises(SidecarError):
        write_tags(image, ["dog"], "pixdex", "m")
    assert side.read_bytes() == b"<x:xmpmeta><rdf:RDF><broken"


def test_write_is_atomic_and_keeps_permissions(image: Path) -> None:
    side = sidecar_path(image)
    write_tags(image, ["dog"], "pixdex", "m")
    side.chmod(0o640)
    inode = side.stat().st_ino
    write_tags(image, ["cat"], "pixdex", "m")
    assert stat.S_IMODE(side.stat().st_mode) == 0o640
    assert side.stat().st_ino != inode  # replaced by rename, never truncated in place
    assert sorted(p.name for p in image.parent.iterdir()) == ["IMG_0001.jpg", "IMG_0001.jpg.xmp"]


def test_unchanged_tags_do_not_rewrite(image: Path) -> None:
    side = write_tags(image, ["dog"], "pixdex", "m")
    assert side is not None
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


def test_non_utf8_file_name(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"\xff\xfeodd.jpg")
    with open(raw, "wb") as handle:
        solid((1, 2, 3)).save(handle, format="JPEG")
    side = write_tags(Path(os.fsdecode(raw)), ["dog"], "pixdex", "m")
    assert side is not None and os.path.exists(raw + b".xmp")
    assert read_sidecar(side)["Xmp.dc.subject"] == ["dog"]
