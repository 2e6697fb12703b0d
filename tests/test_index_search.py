"""Index a generated folder with the stand-in models, then search it: real ONNX sessions, real
usearch/tantivy/SQLite on disk, real sidecars. Runs the CLI's `main` in-process."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import Env, exif_bytes, make_library, solid


def catalog_rows(env: Env) -> dict[str, dict[str, object]]:
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    db.row_factory = sqlite3.Row
    rows = {os.fsdecode(r["path"]): dict(r) for r in db.execute("SELECT * FROM images")}
    db.close()
    return rows


def search(env: Env, capsys: pytest.CaptureFixture[str], query: str, k: int = 50) -> list[dict[str, object]]:
    status, out, err = env.cli("search", query, "-k", str(k), "--json", capsys=capsys)
    assert status in (0, 1), err
    return list(json.loads(out)["hits"])


def paths(hits: list[dict[str, object]]) -> set[str]:
    return {Path(str(h["path"])).name for h in hits}


def text_side(hits: list[dict[str, object]]) -> list[str]:
    """The names the text side found, in its own rank order (with 9 images every name is a vector hit)."""
    found = sorted((int(str(h["text_rank"])), Path(str(h["path"])).name) for h in hits if h["text_rank"] is not None)
    return [name for _, name in found]


@pytest.fixture()
def library(env: Env, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    files = make_library(env.pics)
    summary = env.index_json(capsys)
    assert summary["new"] == len(files) and summary["failed"] == 0, summary
    return files


def test_first_run_indexes_everything_and_writes_sidecars(env: Env, library: dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    rows = catalog_rows(env)
    assert len(rows) == len(library)
    assert {r["state"] for r in rows.values()} == {"done"}
    assert len({r["id"] for r in rows.values()}) == len(library)
    tagged = [p for p, r in rows.items() if json.loads(str(r["tags"]))]
    assert tagged, "the stand-in tagger should tag some images"
    for path in tagged:
        assert Path(path + ".xmp").exists()
    _status, out, _ = env.cli("status", "--json", capsys=capsys)
    info = json.loads(out)
    assert info["counts"]["done"] == len(library)
    assert info["models"]["clip"]["state"].startswith("stand-in")
    assert info["sizes"]["vector index"] > 0 and info["sizes"]["text index"] > 0


def test_second_run_over_unchanged_tree_does_no_decoding_or_model_work(
        env: Env, library: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    vectors = env.data / "vectors" / "vectors.usearch"
    before = vectors.stat()
    summary = env.index_json(capsys)
    after = vectors.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert summary["unchanged"] == len(library)
    assert (summary["new"], summary["changed"], summary["decoded"]) == (0, 0, 0)
    assert (summary["embedded"], summary["tagged"], summary["inference_calls"]) == (0, 0, 0)


def test_touched_file_with_same_content_is_not_reinferred(env: Env, library: dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = library["garden/red_flower.png"]
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    summary = env.index_json(capsys)
    assert summary["decoded"] == 0 and summary["inference_calls"] == 0
    assert summary["unchanged"] == len(library)


def test_changed_content_is_reindexed_under_the_same_id(env: Env, library: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = library["garden/green_leaves.png"]
    before = catalog_rows(env)[str(path)]["id"]
    solid((250, 250, 0)).save(path)
    summary = env.index_json(capsys)
    assert summary["changed"] == 1 and summary["embedded"] == 1
    assert catalog_rows(env)[str(path)]["id"] == before


def test_renamed_file_keeps_its_id_without_inference(env: Env, library: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    old = library["holiday/harbour_boats.jpg"]
    old_id = catalog_rows(env)[str(old)]["id"]
    new = env.pics / "moved" / "fishing_boats.jpg"
    new.parent.mkdir()
    old.rename(new)
    summary = env.index_json(capsys)
    assert summary["moved"] == 1 and summary["removed"] == 0 and summary["new"] == 0
    assert summary["inference_calls"] == 0
    rows = catalog_rows(env)
    assert rows[str(new)]["id"] == old_id and str(old) not in rows
    tags = [t["name"] for t in json.loads(str(rows[str(new)]["tags"]))]
    assert tags  # the stand-in tags every generated image
    from pixdex.indexer.sidecars.read import read_sidecar

    assert read_sidecar(Path(str(new) + ".xmp"))["Xmp.dc.subject"] == tags  # the sidecar follows the image
    assert not Path(str(old) + ".xmp").exists()  # moved, not copied: no stale sidecar for a future file
    assert text_side(search(env, capsys, "fishing")) == ["fishing_boats.jpg"]
    assert paths(search(env, capsys, "folder:" + str(new.parent))) == {"fishing_boats.jpg"}
    assert text_side(search(env, capsys, "harbour")) == []  # the old name is gone from the text index


def test_copied_then_deleted_original_is_a_move_by_content(env: Env, library: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    old = library["city/old_tram.bmp"]
    old_id = catalog_rows(env)[str(old)]["id"]
    new = env.pics / "tram_copy.bmp"
    shutil.copyfile(old, new)  # new inode and mtime: only the content hash can tell
    old.unlink()
    summary = env.index_json(capsys)
    assert summary["moved"] == 1 and summary["inference_calls"] == 0
    assert catalog_rows(env)[str(new)]["id"] == old_id


def test_deleted_file_leaves_both_indexes(env: Env, library: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import tantivy
    from usearch.index import Index

    gone = library["holiday/beach_sunset_02.jpg"]
    gone_id = catalog_rows(env)[str(gone)]["id"]
    gone.unlink()
    summary = env.index_json(capsys)
    assert summary["removed"] == 1
    index = Index.restore(str(env.data / "vectors" / "vectors.usearch"))
    assert not index.contains(gone_id) and len(index) == len(library) - 1
    from pixdex.indexer.fulltext import _schema, open_for_reading
    from pixdex.indexer.layout import Layout

    text = open_for_reading(Layout(env.data))
    assert text is not None
    searcher = text.searcher()
    assert searcher.search(tantivy.Query.term_query(_schema(), "id", gone_id), 10).hits == []
    assert searcher.num_docs == len(library) - 1
    assert "beach_sunset_02.jpg" not in paths(search(env, capsys, "beach sunset"))


def test_exact_copy_is_the_top_similar_hit(env: Env, library: dict[str, Path],
                                           capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    original = library["holiday/harbour_boats.jpg"]
    copy = env.pics / "copies" / "harbour_again.jpg"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    env.index_json(capsys)
    status, out, _ = env.cli("similar", str(original), "-k", "3", "--json", capsys=capsys)
    hits = json.loads(out)["hits"]
    assert status == 0 and Path(hits[0]["path"]).name == "harbour_again.jpg"
    assert hits[0]["vector_score"] == pytest.approx(1.0, abs=2e-3)
    outside = tmp_path / "elsewhere.jpg"  # not in the index: embedded on the fly
    shutil.copyfile(original, outside)
    status, out, _ = env.cli("similar", str(outside), "-k", "2", "--json", capsys=capsys)
    assert {Path(h["path"]).name for h in json.loads(out)["hits"]} == {"harbour_boats.jpg", "harbour_again.jpg"}


def test_text_side_finds_by_tag_folder_and_file_name(env: Env, library: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rows = catalog_rows(env)
    _path, row = next((p, r) for p, r in rows.items() if json.loads(str(r["tags"])))
    tag = json.loads(str(row["tags"]))[0]["name"]
    tagged = {Path(p).name for p, r in rows.items() if tag in [t["name"] for t in json.loads(str(r["tags"]))]}
    by_filter = search(env, capsys, f'tag:"{tag}"')
    assert paths(by_filter) == tagged
    by_word = [h for h in search(env, capsys, tag) if h["text_rank"] is not None]
    assert {Path(str(h["path"])).name for h in by_word} >= tagged
    garden = [h for h in search(env, capsys, "garden") if h["text_rank"] is not None]
    assert {Path(str(h["path"])).name for h in garden} == {"red_flower.png", "green_leaves.png", "blue_pond.webp"}
    tram = search(env, capsys, "tram")
    assert Path(str(tram[0]["path"])).name == "old_tram.bmp" and tram[0]["text_rank"] == 1


def test_hits_carry_fused_score_and_both_parts(env: Env, library: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    hits = search(env, capsys, "tram")
    top = hits[0]
    assert top["vector_rank"] is not None and top["text_rank"] is not None
    assert top["score"] == pytest.approx(1 / (60 + top["vector_rank"]) + 1 / (60 + top["text_rank"]), rel=1e-4)
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(hits))


def test_filters_restrict_both_sides(env: Env, library: dict[str, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert paths(search(env, capsys, "flower ext:png")) == {"red_flower.png", "green_leaves.png"}
    assert paths(search(env, capsys, "sunset -ext:png -ext:jpg")) == {"blue_pond.webp", "night_street.gif",
                                                                      "old_tram.bmp", "scan_archive.tiff"}
    assert paths(search(env, capsys, f"boats folder:{env.pics / 'holiday'}")) == {
        "beach_sunset_01.jpg", "beach_sunset_02.jpg", "harbour_boats.jpg"}
    assert paths(search(env, capsys, "photo camera:canon")) == {"beach_sunset_01.jpg", "beach_sunset_02.jpg"}
    assert paths(search(env, capsys, "photo camera:nikon")) == {"harbour_boats.jpg"}
    assert paths(search(env, capsys, "beach after:2020-01-01 folder:" + str(env.pics / "holiday"))) == {
        "beach_sunset_02.jpg", "harbour_boats.jpg"}
    assert paths(search(env, capsys, "beach before:2020 camera:canon")) == {"beach_sunset_01.jpg"}
    phrase_text = [h for h in search(env, capsys, '"beach sunset"') if h["text_rank"] is not None]
    assert {Path(str(h["path"])).name for h in phrase_text} == {"beach_sunset_01.jpg", "beach_sunset_02.jpg"}
    rows = catalog_rows(env)
    tag = next(t["name"] for r in rows.values() for t in json.loads(str(r["tags"])))
    excluded = search(env, capsys, f'anything -tag:"{tag}"')
    assert excluded and all(tag not in h["tags"] for h in excluded)


def test_query_with_only_filters_lists_matches_newest_first(env: Env, library: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = env.cli("search", "camera:canon", capsys=capsys)
    assert status == 0 and "only filters" in err
    lines = out.splitlines()
    assert "beach_sunset_02.jpg" in lines[0] and "beach_sunset_01.jpg" in lines[1]


def test_arithmetic_query_runs_and_reports_vector_side(env: Env, library: dict[str, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    hits = search(env, capsys, "beach + sunset - people")
    assert hits and all(h["vector_rank"] is not None for h in hits)
    status, _, err = env.cli("search", "- people", capsys=capsys)
    assert status == 2 and "nothing to look for" in err


@pytest.mark.parametrize("args, message", [
    (["search", "dog", "-k", "0"], "k = 0 is out of range"),
    (["search", "dog", "-k", "100001"], "out of range"),
    (["search", "after:2020-13-45"], "is not a date"),
    (["index", "/nonexistent/folder"], "no such folder"),
    (["similar", "/nonexistent.jpg"], "cannot read query image"),
])
def test_bad_input_gets_a_clear_message(env: Env, library: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                        args: list[str], message: str) -> None:
    status, _, err = env.cli(*args, capsys=capsys)
    assert status == 2 and message in err and "Traceback" not in err


def test_bad_files_are_recorded_and_the_run_goes_on(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    make_library(env.pics)
    (env.pics / "notes.jpg").write_text("this is not an image")
    good = env.pics / "holiday" / "beach_sunset_01.jpg"
    (env.pics / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    (env.pics / "empty.png").write_bytes(b"")
    bomb = env.pics / "bomb.png"
    solid((0, 0, 0), (20_000, 10_000)).convert("1").save(bomb)  # 200 Mpx, a few KB on disk
    summary = env.index_json(capsys)
    failed = {Path(p).name: reason for p, reason in summary["failures"]}
    assert set(failed) == {"notes.jpg", "truncated.jpg", "empty.png", "bomb.png"}
    assert "max_pixels" in failed["bomb.png"]
    assert summary["new"] == 13 and catalog_rows(env)[str(good)]["state"] == "done"
    _status, out, _ = env.cli("failures", "--json", capsys=capsys)
    assert {Path(r["path"]).name for r in json.loads(out)} == set(failed)
    again = env.index_json(capsys)
    assert again["failed"] == 4 and again["decoded"] == 0  # unchanged failures are not retried


def test_korean_and_non_utf8_names(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    korean = env.pics / "고양이가_소파에서.png"
    solid((200, 100, 50)).save(korean)
    raw = os.path.join(os.fsencode(env.pics), b"caf\xe9_latin1.png")
    with open(raw, "wb") as handle:
        solid((10, 100, 50)).save(handle, format="PNG")
    summary = env.index_json(capsys)
    assert summary["new"] == 2 and summary["failed"] == 0, summary
    assert text_side(search(env, capsys, "고양이")) == ["고양이가_소파에서.png"]
    assert text_side(search(env, capsys, "latin1")) == ["caf\\xe9_latin1.png"]
    assert os.path.exists(raw + b".xmp") or not json.loads(
        str(catalog_rows(env)[os.fsdecode(raw)]["tags"]))


def test_accents_and_eszett_match_either_way_typed(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    solid((200, 100, 50)).save(env.pics / "Straße_in_Zürich.png")
    solid((20, 100, 50)).save(env.pics / "strasse_sign.png")
    solid((50, 100, 200)).save(env.pics / "café_crème.jpg", exif=exif_bytes(("Lumiere", "Lumiere Eclair")))
    (env.pics / "Köln").mkdir()
    solid((90, 90, 90)).save(env.pics / "Köln" / "dom.png")
    summary = env.index_json(capsys)
    assert summary["new"] == 4 and summary["failed"] == 0, summary
    assert sorted(text_side(search(env, capsys, "Straße"))) == ["Straße_in_Zürich.png", "strasse_sign.png"]
    assert sorted(text_side(search(env, capsys, "STRASSE"))) == ["Straße_in_Zürich.png", "strasse_sign.png"]
    assert text_side(search(env, capsys, "zurich")) == ["Straße_in_Zürich.png"]
    assert text_side(search(env, capsys, "cafe creme")) == ["café_crème.jpg"]
    assert text_side(search(env, capsys, "koln")) == ["dom.png"]
    # EXIF text is ASCII; a filter typed with accents still finds it, as a word in the query does
    assert paths(search(env, capsys, 'camera:"LUMIÈRE éclair"')) == {"café_crème.jpg"}
    assert text_side(search(env, capsys, "lumière")) == ["café_crème.jpg"]


def test_query_syntax_is_searched_as_words_and_a_query_of_nothing_is_refused(
        env: Env, library: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert text_side(search(env, capsys, "*")) == []  # not tantivy's "every document"
    assert text_side(search(env, capsys, "AND (sunset)")) == text_side(search(env, capsys, "and sunset"))
    assert {"beach_sunset_01.jpg", "beach_sunset_02.jpg"} <= set(text_side(search(env, capsys, "(sunset)")))
    phrase = text_side(search(env, capsys, '"beach sunset"'))
    assert text_side(search(env, capsys, "beach_sunset")) == phrase
    for nothing in ['"', "-", "+", "- - -", '""']:
        status, _, err = env.cli("search", nothing, capsys=capsys)
        assert status == 2 and "nothing to look for" in err, (nothing, err)


def test_empty_folder_is_fine(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    summary = env.index_json(capsys)
    assert summary["new"] == 0 and summary["failed"] == 0
    status, _, err = env.cli("search", "anything", capsys=capsys)
    assert status == 1 and "no results" in err


def test_unreadable_folder_is_reported_not_fatal(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    make_library(env.pics)
    locked = env.pics / "city"
    if os.geteuid() == 0:
        # root reads any folder; a folder that vanishes between listing and reading is the same path
        from pixdex.indexer.scan import walk as scan

        real = scan.os.scandir

        def refusing(path: bytes) -> object:
            if os.fsdecode(path).endswith("/city"):
                raise PermissionError(13, "Permission denied")
            return real(path)

        scan_module_patch = pytest.MonkeyPatch()
        scan_module_patch.setattr(scan.os, "scandir", refusing)
    else:
        locked.chmod(0)
        scan_module_patch = None
    try:
        summary = env.index_json(capsys)
    finally:
        locked.chmod(0o755)
        if scan_module_patch:
            scan_module_patch.undo()
    assert summary["new"] == 6 and summary["failed"] == 0
    assert [Path(p).name for p, _ in summary["folder_errors"]] == ["city"]
    assert "Permission denied" in summary["folder_errors"][0][1]
    again = env.index_json(capsys)  # readable again: nothing was removed meanwhile, now the rest comes in
    assert again["new"] == 3 and again["removed"] == 0


def test_lost_vector_file_is_rebuilt_from_the_catalog_without_inference(
        env: Env, library: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    vector_file = env.data / "vectors" / "vectors.usearch"
    before = search(env, capsys, "tram")
    vector_file.unlink()
    during = search(env, capsys, "tram")  # the catalog holds every embedding: the vector side still answers
    assert [(h["path"], h["vector_rank"]) for h in during] == [(h["path"], h["vector_rank"]) for h in before]
    summary = env.index_json(capsys)
    assert (summary["embedded"], summary["inference_calls"], summary["decoded"]) == (0, 0, 0)
    assert vector_file.exists()
    assert search(env, capsys, "tram") == before


def test_broken_vector_file_is_moved_aside_and_rebuilt_without_inference(
        env: Env, library: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    vector_file = env.data / "vectors" / "vectors.usearch"
    before = search(env, capsys, "tram")
    vector_file.write_bytes(b"\0garbage" * 100)
    summary = env.index_json(capsys)
    assert (summary["embedded"], summary["inference_calls"]) == (0, 0)
    assert (env.data / "vectors" / "vectors.usearch.broken").read_bytes().startswith(b"\0garbage")
    from usearch.index import Index

    assert len(Index.restore(str(vector_file))) == len(library)
    assert search(env, capsys, "tram") == before


PERSON_SIDECAR = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:subject><rdf:Bag><rdf:li>grandma</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>"""


def test_a_moved_images_sidecar_goes_with_it_and_no_new_file_inherits_it(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_library(env.pics)
    original = files["garden/red_flower.png"]
    Path(str(original) + ".xmp").write_text(PERSON_SIDECAR)
    env.index_json(capsys)
    assert text_side(search(env, capsys, "grandma")) == ["red_flower.png"]
    moved = env.pics / "family" / "red_flower.png"
    moved.parent.mkdir()
    original.rename(moved)
    solid((1, 1, 250)).save(original)  # an unrelated picture takes the old name
    summary = env.index_json(capsys)
    assert summary["moved"] == 1 and summary["new"] == 1
    assert "grandma" in Path(str(moved) + ".xmp").read_text()
    assert not Path(str(original) + ".xmp").exists() or "grandma" not in Path(str(original) + ".xmp").read_text()
    found = [h["path"] for h in search(env, capsys, "grandma") if h["text_rank"] is not None]
    assert found == [str(moved)]


def test_similar_through_a_link_leaves_the_image_out_and_says_which_filter_words_it_ignored(
        env: Env, library: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env.index_json(capsys)
    original = library["holiday/harbour_boats.jpg"]
    link = tmp_path / "link to boats.jpg"
    link.symlink_to(original)
    status, out, _ = env.cli("similar", str(link), "-k", "8", "--json", "--filter", "stars:3 red ext:png",
                             capsys=capsys)
    data = json.loads(out)
    assert status == 0 and original.name not in {Path(h["path"]).name for h in data["hits"]}
    assert all(h["path"].endswith(".png") for h in data["hits"])
    assert any("stars:3" in n for n in data["notes"]) and any("not used: " in n and "red" in n for n in data["notes"])
