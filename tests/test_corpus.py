"""Real camera files from ExifTool's test images (../shared/corpus/exiftool): they index without
failure, and their EXIF camera and date are searchable by filter."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import CORPUS, Env

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/exiftool is not beside the checkout")


@pytest.fixture()
def corpus(env: Env, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    for path in sorted(CORPUS.glob("*.jpg")):
        shutil.copyfile(path, env.pics / path.name)  # a copy: sidecars are written beside the images
    return env.index_json(capsys)


def test_every_corpus_jpeg_indexes(env: Env, corpus: dict[str, object]) -> None:
    count = len(list(CORPUS.glob("*.jpg")))
    assert corpus["failed"] == 0, corpus["failures"]
    assert corpus["new"] == count and corpus["embedded"] == count


def test_corpus_camera_and_date_are_filters(env: Env, corpus: dict[str, object],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    rows = {Path(p.decode()).name: (camera, taken) for p, camera, taken in
            db.execute("SELECT path, camera, taken FROM images")}
    assert rows["Canon.jpg"][0] and "canon" in rows["Canon.jpg"][0].lower()
    status, out, _ = env.cli("search", "camera:canon", "-k", "100", "--json", capsys=capsys)
    found = {Path(h["path"]).name for h in json.loads(out)["hits"]}
    assert status == 0 and found == {n for n, (camera, _) in rows.items() if camera and "canon" in camera.lower()}
    assert "Canon.jpg" in found and "Nikon.jpg" not in found
    dated = {n: t for n, (_, t) in rows.items() if t}
    assert len(dated) > 10
    cut = sorted(dated.values())[len(dated) // 2][:10]
    status, out, _ = env.cli("search", f"before:{cut}", "-k", "100", "--json", capsys=capsys)
    before = {Path(h["path"]).name for h in json.loads(out)["hits"]}
    assert before and all(dated.get(n, "9999") < cut for n in before)
    assert before == {n for n, t in dated.items() if t < cut}


def test_other_containers_index_and_a_stub_heic_gets_a_reason(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    names = ["ExifTool.tif", "GeoTiff.tif", "PNG.png", "RIFF.webp", "QuickTime.heic"]
    for name in names:
        shutil.copyfile(CORPUS / name, env.pics / name)
    summary = env.index_json(capsys)
    failures = {Path(p).name: reason for p, reason in summary["failures"]}
    # QuickTime.heic is a metadata-only stub with no image data: refused with the decoder's reason.
    assert list(failures) == ["QuickTime.heic"] and "cannot decode" in failures["QuickTime.heic"]
    assert summary["embedded"] == 4
    _status, out, _ = env.cli("search", "camera:rebel", "--json", capsys=capsys)
    assert [Path(h["path"]).name for h in json.loads(out)["hits"]] == ["ExifTool.tif"]


def test_existing_keywords_titles_and_captions_are_searchable(env: Env, corpus: dict[str, object],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    def text_hits(query: str) -> set[str]:
        _status, out, _ = env.cli("search", query, "-k", "100", "--json", capsys=capsys)
        return {Path(h["path"]).name for h in json.loads(out)["hits"] if h["text_rank"] is not None}

    assert "IPTC.jpg" in text_hits("witty")  # IPTC caption
    assert "PhotoMechanic.jpg" in text_hits("three")  # IPTC keyword
    # MWG: EXIF ImageDescription wins over XMP dc:description ("A witty caption" over "UTF-16 … encoded XMP"),
    # and what loses is not indexed; MWG.jpg marks every losing value WRONG.
    assert "XMP.jpg" in text_hits("witty") and "XMP.jpg" not in text_hits('"UTF-16 (big-endian) encoded"')
    assert "MWG.jpg" in text_hits("RIGHT1of2-XMP-Keywords") and "MWG.jpg" in text_hits("RIGHT-EXIF-Description")
    assert "MWG.jpg" not in text_hits("WRONG1of2-IPTC-Keywords") | text_hits("WRONG-XMP-Description")
