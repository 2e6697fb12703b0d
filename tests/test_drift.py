"""Sidecars, rows and files that drift apart — each found by kill -9 trials or bursts, each now repaired by
the next run on its own and reported by `pixdex check` (which `--fix` repairs):

- an indexed image whose sidecar was never written (a rename at the wrong moment of the first indexing);
- the sidecar of a deleted image left behind by a kill -9 between the deletion's commit and its removal;
- changes made while a folder could not be read;
- a catalog row whose keywords or content hash were changed behind pixdex's back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PIXDEX, Env, noise
from consistency import check_consistent
from served import Served, wait_for

from pixdex.indexer import faults


def _library(env: Env, count: int = 4) -> list[Path]:
    paths = []
    for n in range(count):
        path = env.pics / f"img{n}.png"
        noise(n).save(path)
        paths.append(path)
    return paths


def _check(env: Env, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, list[dict[str, object]]]:
    status, out, _err = env.cli("check", "--json", *more, capsys=capsys)
    return status, json.loads(out)


def test_an_indexed_image_without_its_sidecar_gets_it_at_the_next_run(env: Env,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The state a rename at the wrong moment left: machine keywords in the catalog, no sidecar, none recorded.
    `check` reports it; the next run writes it without being asked (restarts did not)."""
    paths = _library(env)
    env.index_json(capsys)
    victim = paths[1]
    Path(str(victim) + ".xmp").unlink()
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    db.execute("UPDATE images SET side = NULL, side_hash = NULL WHERE path = ?", (os.fsencode(victim),))
    db.commit()
    db.close()
    status, found = _check(env, capsys)
    assert status == 1 and [(Path(str(f["path"])).name, f["problem"]) for f in found] == [
        ("img1.png", "has machine keywords but no sidecar")]
    env.index_json(capsys)
    assert Path(str(victim) + ".xmp").exists()
    assert _check(env, capsys) == (0, [])
    check_consistent(env.data, env.pics)


def test_kill_9_between_a_deletion_and_its_sidecar_removal_leaves_no_sidecar_for_good(
        env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _library(env)
    env.index_json(capsys)
    paths[2].unlink()
    holds = tmp_path / "holds"
    holds.mkdir()
    environ = {**env.environ, faults.HOLD_ENV: "drop:img2", faults.HOLD_DIR_ENV: str(holds)}
    proc = subprocess.Popen([str(PIXDEX), "--config", str(env.config), "index"], env=environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (holds / "held-drop").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the deletion is committed; its sidecar is still there
    proc.wait()
    orphan = Path(str(paths[2]) + ".xmp")
    assert orphan.exists()
    status, found = _check(env, capsys)
    assert status == 1 and [(Path(str(f["path"])).name, f["kind"]) for f in found] == [("img2.png.xmp", "sidecar")]
    env.index_json(capsys)  # the next run removes it: the deletion wrote it down
    assert not orphan.exists()
    assert _check(env, capsys) == (0, [])
    check_consistent(env.data, env.pics)


def test_check_fix_removes_only_orphaned_sidecars_pixdex_alone_wrote(env: Env,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Orphans left by earlier versions: `check --fix` removes pixdex's alone; a person's sidecar without its
    image (keywords they wrote) is theirs and stays, and so does a RAW's `IMG.xmp`."""
    paths = _library(env)
    env.index_json(capsys)
    ours, theirs = env.pics / "ghost.png.xmp", env.pics / "kept.png.xmp"
    shutil.copyfile(str(paths[0]) + ".xmp", ours)
    theirs.write_text(Path(str(paths[0]) + ".xmp").read_text().replace(
        "<digiKam:TagsList>\n    <rdf:Seq>", "<digiKam:TagsList>\n    <rdf:Seq>\n     <rdf:li>Grandma</rdf:li>", 1))
    (env.pics / "IMG_9.CR2").write_bytes(b"raw")
    shutil.copyfile(str(paths[0]) + ".xmp", env.pics / "IMG_9.xmp")
    status, found = _check(env, capsys)
    assert status == 1 and [Path(str(f["path"])).name for f in found] == ["ghost.png.xmp"]
    status, found = _check(env, capsys, "--fix")
    assert status == 0 and found == []
    assert not ours.exists() and theirs.exists() and (env.pics / "IMG_9.xmp").exists()


def test_a_sidecar_whose_image_is_in_the_trash_is_no_orphan(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """An image in the freedesktop trash (send2trash, as `POST /items/{id}/trash` moves it) whose sidecar came back
    alone: the image may follow, so `check --fix` keeps its sidecar (its id, keywords, embedding); once the image is
    gone from the trash too, the sidecar is an orphan like any other."""
    import sys

    paths = _library(env)
    env.index_json(capsys)
    image, side = paths[0], Path(str(paths[0]) + ".xmp")
    kept = side.read_bytes()
    # In a process of its own: send2trash reads $XDG_DATA_HOME once, when it is first imported.
    subprocess.run([sys.executable, "-c", "import sys; from send2trash import send2trash; "
                    "[send2trash(p) for p in sys.argv[1:]]", str(side), str(image)], env=env.environ, check=True)
    env.index_json(capsys)  # the image's deletion registered (its sidecar was in the trash: nothing to remove)
    trash = env.root / "data" / "Trash"  # $XDG_DATA_HOME/Trash: the same filesystem as the pictures
    assert (trash / "files" / image.name).is_file()
    shutil.move(trash / "files" / side.name, side)  # the file manager's "Restore" of the sidecar alone
    (trash / "info" / f"{side.name}.trashinfo").unlink()
    env.index_json(capsys)
    assert _check(env, capsys, "--fix") == (0, [])
    assert side.read_bytes() == kept
    (trash / "files" / image.name).unlink()  # the trash emptied: nothing will come back for it
    (trash / "info" / f"{image.name}.trashinfo").unlink()
    status, found = _check(env, capsys)
    assert status == 1 and [Path(str(f["path"])).name for f in found] == [side.name]


def test_check_notices_keywords_and_hashes_changed_behind_its_back(env: Env,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    paths = _library(env)
    env.index_json(capsys)
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    tags = json.loads(db.execute("SELECT tags FROM images WHERE path = ?", (os.fsencode(paths[0]),)).fetchone()[0])
    db.execute("UPDATE images SET tags = ? WHERE path = ?",
               (json.dumps(tags[1:]), os.fsencode(paths[0])))  # a machine keyword gone from the row only
    db.execute("UPDATE images SET hash = 'feedfacefeedfacefeedfacefeedface' WHERE path = ?", (os.fsencode(paths[3]),))
    db.commit()
    db.close()
    status, found = _check(env, capsys)
    problems = {(Path(str(f["path"])).name, str(f["problem"]).split(" (")[0].split(" are")[0]) for f in found}
    assert status == 1
    assert any(name == "img0.png.xmp" and "not in the catalog" in str(f["problem"])
               for f in found for name in [Path(str(f["path"])).name]), problems
    assert any(name == "img3.png.xmp" and "embedding of other content" in str(f["problem"])
               for f in found for name in [Path(str(f["path"])).name]), problems
    assert any(f["kind"] == "text index" and Path(str(f["path"])).name == "img0.png" for f in found), problems


@pytest.mark.slow
def test_changes_made_while_a_folder_was_unreadable_are_indexed_once_it_is_readable(
        tmp_path: Path, model_dir: Path) -> None:
    """chmod 000, then 5 images added and 3 replaced, then chmod 755: within seconds all are indexed with their
    new content; meanwhile status and failures name the folder. Root reads everything: the daemon runs
    without the capabilities that let it (setpriv), as a person's daemon does."""
    pics = tmp_path / "pics"
    album = pics / "album"
    album.mkdir(parents=True)
    for n in range(4):
        noise(n).save(album / f"old{n}.png")
    daemon = Served(tmp_path, model_dir, [pics])
    without_root_capabilities(daemon)
    daemon.start()
    try:
        wait_for(lambda: daemon.idle() and len(daemon.listed()) == 4, timeout=60, what="indexing")
        before = daemon.listed()
        album.chmod(0o000)
        for n in range(5):
            _as_root_write(album, f"new{n}.png", n + 10)
        for n in range(3):
            _as_root_write(album, f"old{n}.png", n + 20)
        # The events send the scanner there, which cannot list it: kept as it was, and said so.
        wait_for(lambda: any(f["kind"] == "folder" for f in daemon.get("/failures")), timeout=30,
                 what="the folder to be reported")
        assert daemon.status()["unreadable_folders"][0]["path"] == str(album)
        assert len(daemon.listed()) == 4
        album.chmod(0o755)
        wait_for(lambda: daemon.idle() and len(daemon.listed()) == 9, timeout=60, what="the changes to be indexed")
        assert all(daemon.listed()[p] == i for p, i in before.items())  # the replaced ones kept their ids
        assert not daemon.get("/failures")
        assert daemon.status()["unreadable_folders"] == []
    finally:
        album.chmod(0o755)
        daemon.stop()
    check_consistent(daemon.data, pics)


@pytest.mark.slow
def test_a_file_that_failed_for_want_of_permission_is_indexed_once_it_is_readable(
        tmp_path: Path, model_dir: Path) -> None:
    """Found by a trial: an image of mode 000 failed with "Permission denied"; `chmod 644` changes no content, size
    or mtime, so the file stayed failed for good. The daemon runs without root's file capabilities (setpriv)."""
    pics = tmp_path / "pics"
    pics.mkdir()
    for n in range(3):
        noise(n).save(pics / f"img{n}.png")
    locked = pics / "locked.png"
    noise(9).save(locked)
    locked.chmod(0o000)
    daemon = Served(tmp_path, model_dir, [pics])
    without_root_capabilities(daemon)
    daemon.start()
    try:
        wait_for(lambda: daemon.idle() and len(daemon.listed()) == 3 and daemon.get("/failures"), timeout=60,
                 what="indexing, and the locked file's failure")
        [failure] = daemon.get("/failures")
        assert failure["path"] == str(locked) and "Permission denied" in failure["reason"], failure
        locked.chmod(0o644)
        wait_for(lambda: daemon.idle() and len(daemon.listed()) == 4, timeout=60, what="the file to be indexed")
        assert not daemon.get("/failures")
    finally:
        locked.chmod(0o644)
        daemon.stop()
    check_consistent(daemon.data, pics)


def without_root_capabilities(daemon: Served) -> None:
    """Root reads and writes whatever the modes say: run the daemon without those capabilities, as a person's is."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to run the daemon without root's file capabilities")
        daemon.command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *daemon.command]


def _as_root_write(folder: Path, name: str, seed: int) -> None:
    """Write into a folder of mode 000: the test runs as root (or as the owner, after a brief chmod)."""
    if os.geteuid() != 0:
        folder.chmod(0o700)
    noise(seed).save(folder / name)
    if os.geteuid() != 0:
        folder.chmod(0o000)


@pytest.mark.parametrize("theirs", [False, True])
def test_an_image_moved_over_another_takes_over_its_sidecar_with_its_own_embedding(
        env: Env, capsys: pytest.CaptureFixture[str], theirs: bool) -> None:
    """`mv a.png b.png`, both indexed: b.png.xmp must say what a's content is (pixdex:EmbeddingOf, the embedding,
    the id), so a rebuild can take it. The replaced image's sidecar was pixdex's alone: a's replaces it. A
    person's (`theirs`) is kept, with a's keywords and embedding merged into it."""
    from pixdex.indexer.sidecars.keys import EMBEDDING_OF, IMAGE_ID
    from pixdex.indexer.sidecars.read import read_sidecar

    paths = _library(env, 2)
    a, b = paths
    b_side = Path(str(b) + ".xmp")
    if theirs:
        env.index_json(capsys)
        b_side.write_text(b_side.read_text().replace("<rdf:Seq>", "<rdf:Seq>\n     <rdf:li>Grandma</rdf:li>", 1))
    env.index_json(capsys)
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    a_id, a_hash = db.execute("SELECT id, hash FROM images WHERE path = ?", (os.fsencode(a),)).fetchone()
    db.close()
    a.rename(b)
    env.index_json(capsys)
    xmp = read_sidecar(b_side)
    assert xmp[EMBEDDING_OF] == a_hash and xmp[IMAGE_ID] == str(a_id)
    assert not Path(str(a) + ".xmp").exists()
    assert ("Grandma" in xmp.get("Xmp.digiKam.TagsList", [])) is theirs
    assert _check(env, capsys) == (0, [])
    check_consistent(env.data, env.pics)
