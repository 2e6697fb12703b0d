"""Embeddings travel with the photo: `pixdex rebuild` and a fresh data directory search a library from
its sidecars with zero model calls; `pixdex check` finds each kind of disagreement and `--fix` repairs it.
Real stand-in models, real sidecars, real stores on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import PIXDEX, Env, make_library, noise
from consistency import check_consistent
from served import Served, wait_for
from test_index_search import search

from pixdex.indexer.sidecars.keys import EMBEDDING
from pixdex.indexer.sidecars.read import read_sidecar


@pytest.fixture()
def library(env: Env, capsys: pytest.CaptureFixture[str]) -> Env:
    make_library(env.pics)
    summary = env.index_json(capsys)
    assert summary["failed"] == 0 and summary["inference_calls"] > 0
    return env


def ranked(env: Env, capsys: pytest.CaptureFixture[str], query: str) -> list[tuple[str, float]]:
    return [(str(h["path"]), round(float(h["score"]), 6)) for h in search(env, capsys, query, k=20)]


def test_every_sidecar_carries_its_embedding(library: Env) -> None:
    images = [p for p in library.pics.rglob("*") if p.suffix != ".xmp" and p.is_file()]
    for image in images:
        xmp = read_sidecar(image.with_name(image.name + ".xmp"))
        kind, dim, _sum, payload = xmp[EMBEDDING].split(":", 3)
        assert kind == "f16" and int(dim) > 0 and len(payload) > int(dim)


def test_rebuild_from_sidecars_runs_no_model_and_finds_the_same(library: Env,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    before = {q: ranked(library, capsys, q) for q in ("tram", "beach sunset", "tag:1girl", "camera:canon")}
    status, out, err = library.cli("rebuild", "--json", capsys=capsys)
    assert status == 0, err
    summary = json.loads(out)
    assert summary["inference_calls"] == 0 and summary["decoded"] == 0 and summary["from_sidecars"] == 9, summary
    assert Path(summary["moved_aside"]).is_dir()
    after = {q: ranked(library, capsys, q) for q in before}
    # The same results in the same order; fused scores may move in the last digits (float16 in the sidecar).
    assert {q: [p for p, _ in hits] for q, hits in after.items()} == {
        q: [p for p, _ in hits] for q, hits in before.items()}
    check_consistent(library.data, library.pics)


def test_a_library_copied_to_a_fresh_data_directory(library: Env, capsys: pytest.CaptureFixture[str]) -> None:
    before = ranked(library, capsys, "beach sunset")
    shutil.rmtree(library.data)  # the same photos and sidecars on "another machine": nothing but the files
    # One sidecar's embedding is damaged (its checksum no longer matches) and one image was edited since
    # its sidecar was written: those two, and only those, go through the model again.
    damaged = library.pics / "city" / "old_tram.bmp.xmp"
    text = damaged.read_text()
    payload = text.split("pixdex:Embedding=\"")[1].split(":", 3)[3]
    damaged.write_text(text.replace(payload[:8], "AAAAAAAA" if payload[:8] != "AAAAAAAA" else "BBBBBBBB", 1))
    noise(99).save(library.pics / "garden" / "red_flower.png")
    summary = library.index_json(capsys)
    assert summary["from_sidecars"] == 7 and summary["embedded"] == 2, summary
    untouched = [p for p, _ in before if not p.endswith("red_flower.png")]  # its content is new: it moves
    assert [p for p, _ in ranked(library, capsys, "beach sunset") if not p.endswith("red_flower.png")] == untouched


def test_check_finds_every_kind_of_disagreement_and_fix_repairs_them(library: Env,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = library.cli("check", "--json", capsys=capsys)
    assert status == 0 and json.loads(out) == [], out
    gone_sidecar = library.pics / "garden" / "blue_pond.webp.xmp"
    gone_sidecar.unlink()
    # Edited in place to the same size, its time set back: only the stored hash can tell.
    sneaky = library.pics / "holiday" / "beach_sunset_02.jpg.xmp"
    st = sneaky.stat()
    text = sneaky.read_bytes()
    at = text.index(b'MetadataDate="') + len(b'MetadataDate="') + 3  # the year's last digit
    with open(sneaky, "r+b") as handle:
        handle.seek(at)
        handle.write(b"0" if text[at:at + 1] != b"0" else b"1")
    os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
    (library.pics / "holiday" / "harbour_boats.jpg").write_bytes(
        (library.pics / "holiday" / "beach_sunset_01.jpg").read_bytes())
    noise(7).save(library.pics / "city" / "newcomer.png")
    shutil.rmtree(library.data / "fulltext")
    (library.data / "vectors" / "vectors.usearch").write_bytes(b"not a usearch file")
    status, out, _ = library.cli("check", "--json", capsys=capsys)
    found = {(Path(f["path"]).name, f["kind"]) for f in json.loads(out)}
    assert status == 1
    assert ("blue_pond.webp.xmp", "sidecar") in found or ("blue_pond.webp", "sidecar") in found
    assert ("harbour_boats.jpg", "disk") in found
    assert ("beach_sunset_02.jpg.xmp", "sidecar") in found
    assert ("newcomer.png", "catalog") in found
    assert any(kind == "text index" for _, kind in found)
    assert any(kind == "vector index" for _, kind in found)
    status, out, _err = library.cli("check", "--fix", "--json", capsys=capsys)
    assert status == 0 and json.loads(out) == [], out
    assert gone_sidecar.exists()
    check_consistent(library.data, library.pics)


def test_check_beside_a_running_daemon_counts_nothing_its_unsaved_vector_file_lacks(tmp_path: Path,
                                                                                   model_dir: Path) -> None:
    pics = tmp_path / "pics"
    make_library(pics)
    daemon = Served(tmp_path, model_dir, [pics], extra="[index]\nsave_seconds = 3600\nsave_changes = 100000\n")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PIXDEX), "--config", str(daemon.config), "check"], env=daemon.environ,
                              capture_output=True, text=True, timeout=120)

    daemon.start()
    try:
        wait_for(lambda: daemon.idle() and len(daemon.listed()) == 9, what="the library")
        first = check()
        assert first.returncode == 0, first.stdout + first.stderr  # no vector file saved yet
        daemon.stop()  # saves it
        daemon.start()
        wait_for(daemon.idle, what="the restart")
        (pics / "garden" / "red_flower.png").unlink()
        noise(77).save(pics / "garden" / "new_one.png")
        wait_for(lambda: daemon.idle() and "new_one.png" in str(daemon.listed()) and len(daemon.listed()) == 9,
                 what="the change")
        running = check()
        assert running.returncode == 0, running.stdout + running.stderr  # the file is behind, by design
    finally:
        daemon.stop()
    stopped = check()
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_an_image_moved_onto_someone_elses_sidecar_is_indexed_with_it(library: Env, capsys: pytest.CaptureFixture[str],
                                                                     exiftool: str) -> None:
    from test_index_search import paths

    source = library.pics / "garden" / "green_leaves.png"
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject+=plainkw", str(source) + ".xmp"], check=True,
                   capture_output=True)
    library.index_json(capsys)
    assert paths(search(library, capsys, "tag:plainkw")) == {"green_leaves.png"}
    waiting = library.pics / "city" / "arriving.png.xmp"  # a sidecar whose image is not there (yet)
    subprocess.run([exiftool, "-o", str(waiting), "-XMP-dc:Subject=destkw", str(source) + ".xmp"], check=True,
                   capture_output=True)
    subprocess.run([exiftool, "-overwrite_original", "-XMP-dc:Subject=destkw", str(waiting)], check=True,
                   capture_output=True)
    source.rename(library.pics / "city" / "arriving.png")
    summary = library.index_json(capsys)
    assert summary["moved"] == 1, summary
    assert paths(search(library, capsys, "tag:destkw")) == {"arriving.png"}
    assert paths(search(library, capsys, "tag:plainkw")) == set()
    assert (library.pics / "garden" / "green_leaves.png.xmp").exists()  # the old one stays, never clobbering


def test_decomposed_korean_keywords_match_what_is_typed(library: Env, capsys: pytest.CaptureFixture[str],
                                                        exiftool: str) -> None:
    import unicodedata

    from test_index_search import paths

    side = library.pics / "garden" / "blue_pond.webp.xmp"
    decomposed = unicodedata.normalize("NFD", "바다")
    assert decomposed != "바다"
    subprocess.run([exiftool, "-overwrite_original", f"-XMP-dc:Subject+={decomposed}", str(side)], check=True,
                   capture_output=True)
    library.index_json(capsys)
    assert paths(search(library, capsys, "tag:바다")) == {"blue_pond.webp"}
    assert "blue_pond.webp" in paths(search(library, capsys, "바다"))


def _without_models(env: Env, tmp_path: Path) -> None:
    """The same config, pointing at a model folder that is not there."""
    text = env.config.read_text()
    env.config.write_text(text.replace(json.dumps(str(_model_dir(text))), json.dumps(str(tmp_path / "no-models"))))


def _model_dir(config_text: str) -> str:
    return json.loads(config_text.split("model_dir = ", 1)[1].split("\n", 1)[0])


def _a_machine_tag(env: Env) -> str:
    """A machine keyword some images have and others not (the stand-in tagger's words are random)."""
    import collections
    import sqlite3

    db = sqlite3.connect(env.data / "catalog.sqlite3")
    try:
        counts = collections.Counter(t["name"] for (tags,) in db.execute("SELECT tags FROM images")
                                     for t in json.loads(tags) if t.get("category") != "person")
    finally:
        db.close()
    return next(name for name, n in counts.most_common() if n < 9)


def _ids(env: Env) -> dict[str, int]:
    import sqlite3

    db = sqlite3.connect(env.data / "catalog.sqlite3")
    try:
        return {os.fsdecode(p): int(i) for p, i in db.execute("SELECT path, id FROM images")}
    finally:
        db.close()


def test_rebuild_without_model_files_keeps_keywords_similar_and_ids(library: Env, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """No model file at all: the rebuild takes keywords and embeddings from the sidecars (which say which model
    made them), keeps every image's id, and moves the old stores aside only once the new ones are complete."""
    word = _a_machine_tag(library)
    tagged = {h["path"] for h in search(library, capsys, f"tag:{word}", k=20)}
    assert tagged
    ids = _ids(library)
    sunset = str(library.pics / "holiday" / "beach_sunset_01.jpg")
    status, out, err = library.cli("similar", sunset, "--json", capsys=capsys)
    assert status == 0, err
    similar = [h["path"] for h in json.loads(out)["hits"]]
    _without_models(library, tmp_path)

    status, out, err = library.cli("rebuild", "--json", capsys=capsys)
    assert status == 0, err
    summary = json.loads(out)
    assert summary["inference_calls"] == 0 and summary["from_sidecars"] == 9 and summary["failed"] == 0, summary
    assert summary["models"] and Path(summary["moved_aside"]).is_dir()
    assert not list(library.data.glob("rebuild-*"))
    assert _ids(library) == ids
    assert {h["path"] for h in search(library, capsys, f"tag:{word}", k=20)} == tagged
    status, out, err = library.cli("similar", sunset, "--json", capsys=capsys)
    assert status == 0, err
    assert [h["path"] for h in json.loads(out)["hits"]] == similar
    status, out, err = library.cli("search", "beach", "--json", capsys=capsys)
    assert status == 0 and any("text results only" in n for n in json.loads(out)["notes"])


def test_a_rebuild_that_fails_leaves_the_old_stores_in_place(library: Env, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from pixdex.daemon.commands import indexing

    word = _a_machine_tag(library)
    tagged = {h["path"] for h in search(library, capsys, f"tag:{word}", k=20)}

    def broken(*args: object, **kwargs: object) -> dict[str, object]:
        raise OSError("disk full")

    monkeypatch.setattr(indexing, "index_folders", broken)
    with pytest.raises(OSError):
        library.cli("rebuild", capsys=capsys)
    assert not list(library.data.glob("before-rebuild-*")) and not list(library.data.glob("rebuild-*"))
    assert tagged and {h["path"] for h in search(library, capsys, f"tag:{word}", k=20)} == tagged


def test_a_swap_cut_short_by_a_crash_is_finished_at_the_next_open(library: Env, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The swap is written down before it starts: a crash after the old catalog went aside but before the new
    one came in is finished by the next run, never leaving the data directory without a catalog."""
    from pixdex.indexer import rebuild
    from pixdex.indexer.files import atomic_write
    from pixdex.indexer.layout import Layout

    word = _a_machine_tag(library)
    tagged = {h["path"] for h in search(library, capsys, f"tag:{word}", k=20)}
    layout = Layout(library.data)
    built = Layout(library.data / "rebuild-x.partial")
    built.root.mkdir()
    for path in rebuild.stores(layout):  # a complete build: a copy of the current stores
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, built.root / path.name)
    aside = library.data / "before-rebuild-x"
    atomic_write(library.data / rebuild.MARKER, json.dumps({"built": str(built.root), "aside": str(aside)}).encode())
    aside.mkdir()
    os.replace(layout.catalog, aside / layout.catalog.name)  # the crash: the old catalog aside, nothing else
    assert not layout.catalog.exists()
    library.index_json(capsys)  # any writer finishes the swap first
    assert layout.catalog.exists() and not (library.data / rebuild.MARKER).exists() and not built.root.exists()
    assert tagged and {h["path"] for h in search(library, capsys, f"tag:{word}", k=20)} == tagged
    check_consistent(library.data, library.pics)


@pytest.mark.slow
def test_a_daemon_without_models_takes_keywords_and_embeddings_from_sidecars(library: Env, tmp_path: Path) -> None:
    """A library indexed elsewhere (its sidecars), served here before any model is installed: tag: finds what
    the sidecars say, `similar` of an indexed image answers; searching by meaning waits for the model."""
    word = _a_machine_tag(library)
    tagged = {str(p).removesuffix(".xmp") for p in library.pics.rglob("*.xmp") if f"pixdex|{word}<" in p.read_text()}
    assert tagged
    shutil.rmtree(library.data)
    daemon = Served(tmp_path / "served", None, [library.pics]).start()
    try:
        wait_for(lambda: daemon.idle() and len(daemon.listed(library.pics)) == 9, timeout=60, what="reduced indexing")
        assert {h["path"] for h in daemon.get("/search", q=f"tag:{word}", k=50)["hits"]} == tagged
        sunset = str(library.pics / "holiday" / "beach_sunset_01.jpg")
        hits = daemon.get("/similar", path=sunset, k=5)["hits"]
        assert hits and sunset not in [h["path"] for h in hits]
    finally:
        daemon.stop()


def test_ids_travel_with_the_sidecars(library: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every sidecar says its image's id (pixdex:Id): a fresh data directory — the catalog lost, or the library
    on another machine — and a rebuild without the old catalog give every image the id it had, so links,
    tokens' views and the web page's addresses still name it."""
    from pixdex.indexer.sidecars.keys import IMAGE_ID

    ids = _ids(library)
    for path, image_id in ids.items():
        assert read_sidecar(Path(path + ".xmp"))[IMAGE_ID] == str(image_id)
    shutil.rmtree(library.data)
    library.index_json(capsys)
    assert _ids(library) == ids
    for name in ("catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm"):
        (library.data / name).unlink(missing_ok=True)  # the old catalog is gone: the sidecars alone say
    status, _out, err = library.cli("rebuild", "--json", capsys=capsys)
    assert status == 0, err
    assert _ids(library) == ids
    check_consistent(library.data, library.pics)


def test_what_a_killed_rebuild_left_is_removed_at_the_next_open(library: Env,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a trial: a rebuild killed while building left its `rebuild-*.partial/` (a whole catalog and
    indexes) until the next rebuild. The next run that opens the data directory removes it."""
    stale = library.data / "rebuild-20261203-101010.partial"
    (stale / "fulltext").mkdir(parents=True)
    (stale / "catalog.sqlite3").write_bytes(b"half a catalog")
    library.index_json(capsys)
    assert not stale.exists()
