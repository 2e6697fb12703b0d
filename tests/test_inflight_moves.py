"""A file or folder moved while its images are on their way through the pipeline: held at decode, at
inference or at the sidecar write (fault injection, `indexer/faults.py`), for a new file, a changed file
and a backfill entry. Every image must end indexed at its new path, with its sidecar beside it, no
failure recorded and no sidecar left at the old path."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import Env, noise
from consistency import check_consistent

from pixdex.indexer import faults
from pixdex.indexer.core import Indexer
from pixdex.indexer.settings import Config, load_config

GRACE = 30.0


def _config(env: Env, model_dir: Path | None = None) -> Config:
    config = load_config(env.config, env.environ)
    if model_dir is not None:
        config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, model_dir=str(model_dir)))
    return config


def _library(pics: Path) -> None:
    for n, name in enumerate(["first.jpg", "held.jpg", "last.png"]):
        path = pics / "a" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        noise(n).save(path)


def _index_once(config: Config, pics: Path) -> None:
    with Indexer(config, reduced="if unloadable") as indexer:
        indexer.scan([pics])
        indexer.drain()


def _hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> Path:
    """Hold indexing at `where` (`STAGE:NAME`, see indexer/faults.py); returns the folder of the markers."""
    holds = tmp_path / "holds"
    holds.mkdir()
    monkeypatch.setenv(faults.HOLD_ENV, where)
    monkeypatch.setenv(faults.HOLD_DIR_ENV, str(holds))
    return holds


def _wait_for(marker: Path, indexer: Indexer, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert indexer.pipeline.fatal is None, indexer.pipeline.fatal
        assert time.monotonic() < deadline, f"the pipeline never reached {marker.name}"
        time.sleep(0.02)


def _ids(env: Env) -> dict[str, int]:
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    try:
        return {os.path.basename(os.fsdecode(p)): i for p, i in db.execute("SELECT path, id FROM images")}
    finally:
        db.close()


def _orphan_sidecars(root: Path) -> list[Path]:
    images = {p for p in root.rglob("*") if p.suffix in (".jpg", ".png")}
    return [s for s in root.rglob("*.xmp") if Path(str(s)[: -len(".xmp")]) not in images]


@pytest.mark.parametrize("stage", ["decode", "infer", "sidecar"])
@pytest.mark.parametrize("kind", ["new", "changed", "backfill"])
@pytest.mark.parametrize("move", ["folder", "file"])
def test_a_move_while_in_flight_keeps_the_image_indexed_at_its_new_path(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str, kind: str, move: str) -> None:
    _library(env.pics)
    if kind == "changed":
        _index_once(_config(env), env.pics)
        noise(99).save(env.pics / "a" / "held.jpg")
    elif kind == "backfill":
        _index_once(_config(env, tmp_path / "no-models"), env.pics)
    holds = _hold(tmp_path, monkeypatch, f"{stage}:held")
    with Indexer(_config(env), vanish_grace=GRACE) as indexer:
        indexer.scan([env.pics])
        before = _ids(env)
        _wait_for(holds / f"held-{stage}", indexer)
        if move == "folder":
            (env.pics / "a").rename(env.pics / "renamed")
        else:
            (env.pics / "a" / "held.jpg").rename(env.pics / "a" / "renamed.jpg")
        if stage == "sidecar":  # the worker holds the sidecar lock: the write lands at the old path first
            (holds / f"release-{stage}").touch()
            indexer.scan([env.pics])  # what the watcher's scanner does after the move
        else:  # the scanner registers the move while the file is in flight
            indexer.scan([env.pics])
            (holds / f"release-{stage}").touch()
        indexer.drain()
        assert indexer.stats.failed == 0, indexer.stats.failures
    ids = check_consistent(env.data, env.pics)
    renamed = "renamed.jpg" if move == "file" else "held.jpg"
    assert sorted(before.values()) == sorted(ids.values())  # every image kept its id
    assert _ids(env)[renamed] == before["held.jpg"]
    assert _orphan_sidecars(env.pics) == []
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    assert db.execute("SELECT count(*) FROM images WHERE state != 'done'").fetchone()[0] == 0
    db.close()


@pytest.mark.parametrize("move", ["folder", "file"])
def test_a_file_that_vanished_waits_for_the_scanner_instead_of_failing(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, move: str) -> None:
    """The decoder finds the file gone before the scanner has seen the move: no failure is recorded (not even
    for a moment: the image would drop out of search), and it is indexed at its new path once the scanner
    registers the move."""
    _library(env.pics)
    holds = _hold(tmp_path, monkeypatch, "decode:held")
    with Indexer(_config(env), vanish_grace=GRACE) as indexer:
        indexer.scan([env.pics])
        before = _ids(env)
        _wait_for(holds / "held-decode", indexer)
        if move == "folder":
            (env.pics / "a").rename(env.pics / "renamed")
        else:
            (env.pics / "a" / "held.jpg").rename(env.pics / "a" / "renamed.jpg")
        (holds / "release-decode").touch()
        deadline = time.monotonic() + 60
        while indexer.pipeline.inflight:  # the others finish; the vanished one is parked, not failed
            assert time.monotonic() < deadline
            time.sleep(0.05)
        indexer.writer.flush()
        db = sqlite3.connect(env.data / "catalog.sqlite3")
        assert db.execute("SELECT count(*) FROM images WHERE state = 'failed'").fetchone()[0] == 0
        parked = db.execute("SELECT count(*) FROM queue").fetchone()[0]
        assert parked == 1 if move == "file" else parked >= 1  # a folder takes the others in flight along
        db.close()
        indexer.scan([env.pics])
        indexer.drain()
        assert indexer.stats.failed == 0, indexer.stats.failures
    ids = check_consistent(env.data, env.pics)
    assert sorted(before.values()) == sorted(ids.values())


@pytest.mark.parametrize("stage", ["decode", "infer"])
def test_a_file_gone_for_good_while_in_flight_fails_once_its_grace_is_over(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """Nothing finds where it went (no scanner runs): after the grace it is tried once more, then failed."""
    _library(env.pics)
    holds = _hold(tmp_path, monkeypatch, f"{stage}:held")
    with Indexer(_config(env), vanish_grace=1.0) as indexer:
        indexer.scan([env.pics])
        _wait_for(holds / f"held-{stage}", indexer)
        os.unlink(env.pics / "a" / "held.jpg")
        (holds / f"release-{stage}").touch()
        indexer.drain()
        assert [Path(p).name for p, _ in indexer.stats.failures] == ["held.jpg"]


def test_a_change_committed_between_the_scan_reading_and_registering_a_move_is_not_undone(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed file, indexed to the point of committing, then moved: the scanner reads the catalog (old
    content), the pipeline commits the new content, then the scanner registers the move. The move must not
    put the old content's hash back on the row (the next scan would think the new content indexed as the
    old one's); the row is checked again at its new path."""
    _library(env.pics)
    _index_once(_config(env), env.pics)
    noise(99).save(env.pics / "a" / "held.jpg")
    holds = _hold(tmp_path, monkeypatch, "commit:held,register:renamed")
    with Indexer(_config(env), vanish_grace=GRACE) as indexer:
        indexer.scan([env.pics])
        _wait_for(holds / "held-commit", indexer)
        (env.pics / "a" / "held.jpg").rename(env.pics / "a" / "renamed.jpg")
        scanner = threading.Thread(target=indexer.scan, args=([env.pics],))
        scanner.start()
        _wait_for(holds / "held-register", indexer)
        (holds / "release-commit").touch()
        deadline = time.monotonic() + 60
        while indexer.pipeline.inflight:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (holds / "release-register").touch()
        scanner.join()
        indexer.drain()
        assert indexer.stats.failed == 0, indexer.stats.failures
    check_consistent(env.data, env.pics)


def test_a_file_in_flight_when_its_whole_folder_is_unmounted_waits_for_it(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library folder goes away as a whole (an unmounted disk) while a file is in flight: it is neither
    failed nor dropped, however long the disk stays away, and is indexed once it is back."""
    _library(env.pics)
    holds = _hold(tmp_path, monkeypatch, "decode:held")
    with Indexer(_config(env), vanish_grace=0.5) as indexer:
        indexer.scan([env.pics])
        _wait_for(holds / "held-decode", indexer)
        env.pics.rename(tmp_path / "unmounted")
        (holds / "release-decode").touch()
        time.sleep(2.0)  # four times the grace
        indexer.writer.flush()
        assert indexer.stats.failed == 0, indexer.stats.failures
        db = sqlite3.connect(env.data / "catalog.sqlite3")
        assert db.execute("SELECT count(*) FROM images WHERE state = 'failed'").fetchone()[0] == 0
        db.close()
        (tmp_path / "unmounted").rename(env.pics)
        indexer.drain()
        assert indexer.stats.failed == 0, indexer.stats.failures
    check_consistent(env.data, env.pics)


@pytest.mark.parametrize("over", [False, True])
def test_a_move_whose_two_ends_are_seen_by_two_scans_keeps_its_id(env: Env, over: bool) -> None:
    """The watcher's scanner can scan the folder a file arrived in before the folder it left (a scan was
    running as the file crossed over): the arrival keeps the row's id, onto a free name or over another image,
    and the later scan of the folder it left removes nothing."""
    for n, name in enumerate(["a/tram.jpg", "b/leaves.jpg"]):
        (env.pics / name).parent.mkdir(parents=True, exist_ok=True)
        noise(n).save(env.pics / name)
    _index_once(_config(env), env.pics)
    before = _ids(env)
    target = env.pics / "b" / ("leaves.jpg" if over else "tram.jpg")
    os.replace(env.pics / "a" / "tram.jpg", target)
    with Indexer(_config(env)) as indexer:
        first = indexer.scan([env.pics / "b"], shallow=[os.fsencode(env.pics / "b")])  # the arrival's end alone
        second = indexer.scan([env.pics / "a"], shallow=[os.fsencode(env.pics / "a")])  # then the end it left
        indexer.drain()
        assert (first.moved, first.new, second.removed) == (1, 0, 0), (first, second)
    check_consistent(env.data, env.pics)
    kept = {} if over else {"leaves.jpg": before["leaves.jpg"]}
    assert _ids(env) == {target.name: before["tram.jpg"]} | kept


@pytest.mark.parametrize("exists", [False, True])
def test_a_sidecar_written_as_its_folder_is_renamed_lands_beside_its_image_and_leaves_no_temp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool) -> None:
    """Found in a whole-suite run: a folder renamed between the temp file's write and its rename left the temp
    file in the folder's new place, and the sidecar unwritten."""
    from pixdex.indexer import files

    album = tmp_path / "a"
    album.mkdir()
    side = album / "held.jpg.xmp"
    was = None
    if exists:
        side.write_bytes(b"old")
        was = files.seen(os.stat(side))
    fsync, moved = os.fsync, []

    def fsync_then_rename(fd: int) -> None:  # the temp file is written: the person moves the album now
        fsync(fd)
        if not moved:
            moved.append(album.rename(tmp_path / "renamed"))

    monkeypatch.setattr(files.os, "fsync", fsync_then_rename)
    files.replace_owned(side, b"new", was)
    assert moved and sorted(p.name for p in (tmp_path / "renamed").iterdir()) == ["held.jpg.xmp"]
    assert (tmp_path / "renamed" / "held.jpg.xmp").read_bytes() == b"new"
