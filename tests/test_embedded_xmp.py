"""Opt-in keywords inside JPEG/TIFF files (Lightroom reads embedded XMP for those): written atomically,
pixel data verified byte-for-byte, no re-indexing loop. Real pyexiv2 writes, real exiftool reads."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyexiv2
import pytest
from conftest import CORPUS, Env, make_library, write_config
from PIL import Image

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.sidecars.embedded import image_data, write_keywords
from pixdex.indexer.sidecars.keys import HIERARCHICAL, SUBJECT, TAGS_LIST


def jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_image_data_is_the_pixels_not_the_metadata(tmp_path: Path) -> None:
    path = jpeg(tmp_path)
    data = path.read_bytes()
    doc = pyexiv2.ImageData(data)
    doc.modify_xmp({"Xmp.dc.subject": ["x"]})
    doc.modify_exif({"Exif.Image.Artist": "someone"})
    rewritten = doc.get_bytes()
    assert rewritten != data and image_data(rewritten) == image_data(data)
    scan = data.index(b"\xff\xda")
    flipped = bytearray(data)
    flipped[scan + 40] ^= 0x01  # one bit of entropy-coded data
    assert image_data(bytes(flipped)) != image_data(data)


def test_write_keywords_keeps_pixels_and_refuses_what_it_cannot_verify(tmp_path: Path, exiftool: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = jpeg(tmp_path)
    before = path.read_bytes()
    assert write_keywords(path, {SUBJECT: ["dog"], HIERARCHICAL: ["pixdex|dog"], TAGS_LIST: ["pixdex/dog"]})
    seen = json.loads(subprocess.run([exiftool, "-j", "-XMP:all", str(path)], capture_output=True, text=True).stdout)[0]
    assert seen["Subject"] in ("dog", ["dog"]) and seen["TagsList"] in ("pixdex/dog", ["pixdex/dog"])
    assert image_data(path.read_bytes()) == image_data(before)
    assert not write_keywords(path, {SUBJECT: ["dog"], HIERARCHICAL: ["pixdex|dog"], TAGS_LIST: ["pixdex/dog"]})
    # A writer that would touch the pixels is refused and the file stays as it was.
    import pixdex.indexer.sidecars.embedded as module

    real = module.image_data
    monkeypatch.setattr(module, "image_data", lambda data: real(data) + (b"x" if data != path.read_bytes() else b""))
    kept = path.read_bytes()
    with pytest.raises(SidecarError, match="would change the image data"):
        write_keywords(path, {SUBJECT: ["cat"], HIERARCHICAL: [], TAGS_LIST: []})
    assert path.read_bytes() == kept


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/exiftool is not beside the checkout")
@pytest.mark.parametrize("name", ["Canon.jpg", "XMP.jpg", "MWG.jpg", "ExifTool.tif", "GeoTiff.tif", "Apple.jpg"])
def test_real_camera_files_keep_their_image_data(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    shutil.copyfile(CORPUS / name, path)
    before = path.read_bytes()
    write_keywords(path, {SUBJECT: ["dog"], HIERARCHICAL: ["pixdex|dog"], TAGS_LIST: ["pixdex/dog"]})
    after = path.read_bytes()
    assert image_data(after) == image_data(before)
    assert "dog" in pyexiv2.ImageData(after).read_xmp()[SUBJECT]
    with Image.open(io.BytesIO(before)) as old, Image.open(io.BytesIO(after)) as new:
        assert old.tobytes() == new.tobytes()


def test_opt_in_index_writes_embedded_keywords_without_a_loop(
        env: Env, model_dir: Path, capsys: pytest.CaptureFixture[str], exiftool: str) -> None:
    write_config(env.config, model_dir, [env.pics], "[sidecar]\nembedded = true\n")
    files = make_library(env.pics)
    originals = {p: p.read_bytes() for p in files.values()}
    first = env.index_json(capsys)
    assert first["failed"] == 0 and first["sidecar_failures"] == 0, first
    for path in files.values():
        sidecar = json.loads(subprocess.run([exiftool, "-j", "-XMP-digiKam:TagsList", str(path) + ".xmp"],
                                            capture_output=True, text=True).stdout)[0].get("TagsList")
        if path.suffix.lower() in (".jpg", ".tiff"):
            inside = json.loads(subprocess.run([exiftool, "-j", "-XMP-digiKam:TagsList", str(path)],
                                               capture_output=True, text=True).stdout)[0].get("TagsList")
            assert inside == sidecar and inside, path.name
            assert image_data(path.read_bytes()) == image_data(originals[path])
        else:
            assert path.read_bytes() == originals[path]  # PNG, WebP, GIF, BMP: never written
    again = env.index_json(capsys)
    assert (again["decoded"], again["inference_calls"], again["changed"]) == (0, 0, 0), again


def test_off_by_default(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_library(env.pics)
    originals = {p: p.read_bytes() for p in files.values()}
    env.index_json(capsys)
    assert {p: p.read_bytes() for p in files.values()} == originals
