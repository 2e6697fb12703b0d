"""The daemon keeps the indexes true while files change: each change is searchable within seconds,
moves and renames keep the item's id (no inference), deletes leave every index."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import gradient, noise
from consistency import check_consistent
from served import Served, wait_for


@pytest.fixture()
def served(tmp_path: Path, model_dir: Path) -> Iterator[Served]:
    pics = tmp_path / "pics"
    (pics / "a").mkdir(parents=True)
    (pics / "b").mkdir()
    noise(1).save(pics / "a" / "first.jpg")
    daemon = Served(tmp_path, model_dir, [pics]).start()
    wait_for(lambda: len(daemon.listed()) == 1, what="the first image")
    yield daemon
    daemon.stop()


def ids(served: Served) -> dict[str, int]:
    return served.listed()


def settled(read: Callable[[], int], quiet: float = 0.5) -> int:
    """A counter's value once it stopped moving for `quiet` seconds."""
    value = read()
    while True:
        time.sleep(quiet)
        again = read()
        if again == value:
            return value
        value = again


def embedded(served: Served, image_id: int) -> bool:
    return bool(served.get(f"/items/{image_id}")["clip_model"])


def test_create_modify_rename_move_delete_each_show_in_search(served: Served) -> None:
    pics = served.folders[0]
    first = str(pics / "a" / "first.jpg")
    first_id = ids(served)[first]

    # create
    noise(2).save(pics / "a" / "second.png")
    wait_for(lambda: str(pics / "a" / "second.png") in ids(served), what="a created file")

    # modify in place: same id, new content indexed
    before = served.get(f"/items/{first_id}")
    with open(first, "r+b") as handle:
        handle.truncate(0)
        gradient(7).save(handle, format="JPEG")
    wait_for(lambda: served.get(f"/items/{first_id}")["size"] != before["size"], what="the modified file")
    assert ids(served)[first] == first_id

    # rename: same id, no new inference (the counter moves just after the commit is visible: let it settle)
    embeddings_before = settled(lambda: served.status()["progress"]["committed"])
    os.rename(first, pics / "a" / "renamed.jpg")
    wait_for(lambda: str(pics / "a" / "renamed.jpg") in ids(served), what="the renamed file")
    assert ids(served)[str(pics / "a" / "renamed.jpg")] == first_id
    assert first not in ids(served)

    # move between folders
    os.rename(pics / "a" / "renamed.jpg", pics / "b" / "moved.jpg")
    wait_for(lambda: str(pics / "b" / "moved.jpg") in ids(served), what="the moved file")
    assert ids(served)[str(pics / "b" / "moved.jpg")] == first_id
    assert served.status()["progress"]["committed"] == embeddings_before  # moves commit no new inference

    # delete
    os.unlink(pics / "b" / "moved.jpg")
    wait_for(lambda: str(pics / "b" / "moved.jpg") not in ids(served), what="the deleted file to leave")
    served.client.request("GET", "/health")
    with pytest.raises(Exception, match="no item"):
        served.get(f"/items/{first_id}")


def test_slow_chunked_write_and_editor_rename_give_one_item(served: Served) -> None:
    pics = served.folders[0]
    data = (pics.parent / "source.jpg")
    noise(3, (400, 300)).save(data, quality=95)
    payload = data.read_bytes()
    target = pics / "a" / "slow.jpg"
    with open(target, "wb") as handle:  # written in chunks, slower than the debounce
        for start in range(0, len(payload), len(payload) // 5 + 1):
            handle.write(payload[start:start + len(payload) // 5 + 1])
            handle.flush()
            time.sleep(0.3)
    item = wait_for(lambda: ids(served).get(str(target)), what="the slowly written file")
    wait_for(lambda: served.get(f"/items/{item}")["state"] == "done", what="it to be indexed")
    assert served.get(f"/items/{item}")["size"] == len(payload)
    assert served.get("/failures") == []

    # An editor saves through a temp file renamed over the original: one update, same id.
    temp = pics / "a" / ".slow.jpg.swp"
    noise(4, (400, 300)).save(temp, format="JPEG")
    os.rename(temp, target)
    wait_for(lambda: served.get(f"/items/{item}")["size"] == target.stat().st_size, what="the editor's save")
    assert ids(served) == {str(pics / "a" / "first.jpg"): ids(served)[str(pics / "a" / "first.jpg")],
                           str(target): item}


def test_directory_rename_and_move_out_and_back(served: Served, tmp_path: Path) -> None:
    pics = served.folders[0]
    album = pics / "album"
    (album / "day1" / "deeper").mkdir(parents=True)
    for n, folder in enumerate([album, album, album, album / "day1", album / "day1" / "deeper"]):
        noise(10 + n).save(folder / f"p{n}.jpg")

    def under(folder: Path) -> dict[str, int]:
        return {os.path.relpath(p, folder): i for p, i in ids(served).items() if p.startswith(str(folder) + "/")}

    wait_for(lambda: len(under(album)) == 5, what="the album")
    before = under(album)
    os.rename(album, pics / "album-2024")  # its subfolders go with it: one move, nothing left behind
    wait_for(lambda: len(under(pics / "album-2024")) == 5 and served.idle(), what="the renamed folder")
    assert under(pics / "album-2024") == before and under(album) == {}  # every id kept, no old path left
    assert served.status()["counts"]["done"] == 6

    outside = tmp_path / "outside"
    os.rename(pics / "album-2024", outside)
    wait_for(lambda: not any("album-2024" in p for p in ids(served)), what="the folder moved out to leave")
    os.rename(outside, pics / "back")
    wait_for(lambda: sum(p.startswith(str(pics / "back") + "/") for p in ids(served)) == 5, what="it to come back")
    assert not any(name.startswith(".") for name in os.listdir(pics / "back"))


def test_a_watched_folder_that_vanishes_is_not_a_deletion(served: Served, tmp_path: Path) -> None:
    """An unmounted disk: the root and its subfolders are gone, the rows stay until it is back."""
    pics = served.folders[0]
    before = ids(served)
    assert list(before) == [str(pics / "a" / "first.jpg")]
    os.rename(pics, tmp_path / "unmounted")
    time.sleep(2)  # the watcher sees the root and pics/a go
    wait_for(served.idle, what="the daemon to settle")
    assert ids(served) == before and served.status()["counts"]["done"] == 1
    os.rename(tmp_path / "unmounted", pics)
    wait_for(lambda: served.idle() and ids(served) == before, what="the folder to be back")


def test_hidden_ignored_and_partial_files_are_not_indexed(served: Served) -> None:
    pics = served.folders[0]
    (pics / ".hidden").mkdir()
    noise(20).save(pics / ".hidden" / "secret.jpg")
    (pics / "node_modules").mkdir()
    noise(21).save(pics / "node_modules" / "icon.png")
    (pics / "skipme").mkdir()
    (pics / "skipme" / ".nomedia").touch()
    noise(22).save(pics / "skipme" / "x.jpg")
    (pics / "a" / "download.jpg.part").write_bytes(b"\xff\xd8 partial")
    noise(23).save(pics / "a" / "visible.jpg")
    wait_for(lambda: str(pics / "a" / "visible.jpg") in ids(served), what="the visible file")
    time.sleep(1.0)
    assert set(ids(served)) == {str(pics / "a" / "first.jpg"), str(pics / "a" / "visible.jpg")}

    # The finished download is renamed to its real name: now it counts.
    noise(24).save(pics / "a" / "download.jpg.part", format="JPEG")
    os.rename(pics / "a" / "download.jpg.part", pics / "a" / "download.jpg")
    wait_for(lambda: str(pics / "a" / "download.jpg") in ids(served), what="the finished download")

    # A .nomedia appearing in an indexed folder takes its images out of the index.
    (pics / "a" / ".nomedia").touch()
    wait_for(lambda: not ids(served), what="the .nomedia folder to leave the index")


@pytest.mark.slow
def test_a_burst_of_a_thousand_changes_ends_with_the_index_equal_to_the_disk(served: Served) -> None:
    pics = served.folders[0]
    rng = random.Random(7)
    live: list[Path] = []
    for n in range(600):
        path = pics / f"d{n % 12}" / f"burst_{n}.png"
        path.parent.mkdir(exist_ok=True)
        noise(1000 + n, (16, 12)).save(path)
        live.append(path)
    for n in range(250):  # moves, some between folders
        source = live.pop(rng.randrange(len(live)))
        target = pics / f"d{rng.randrange(12)}" / f"moved_{n}.png"
        os.rename(source, target)
        live.append(target)
    for _ in range(150):
        os.unlink(live.pop(rng.randrange(len(live))))
    shutil.move(str(pics / "d3"), str(pics / "d3-renamed"))
    wait_for(lambda: served.idle() and len(ids(served)) == sum(1 for _ in pics.rglob("*.*g")),
             timeout=240, what="the index to equal the disk")
    served.stop()
    check_consistent(served.data, pics)


def test_a_deleted_images_sidecar_goes_only_if_pixdex_alone_wrote_it(served: Served) -> None:
    pics = served.folders[0]
    mine, theirs, refused = pics / "a" / "mine.jpg", pics / "a" / "theirs.jpg", pics / "a" / "refused.jpg"
    noise(40).save(mine)
    noise(41).save(theirs)
    noise(42).save(refused)
    wait_for(lambda: {str(mine), str(theirs), str(refused)} <= set(ids(served)), what="the images")
    sidecars = {p: p.with_name(p.name + ".xmp") for p in (mine, theirs, refused)}
    wait_for(lambda: all(s.exists() for s in sidecars.values()), what="pixdex's sidecars")
    item = ids(served)[str(theirs)]
    served.client.request("PATCH", f"/items/{item}", body={"add_tags": ["Aunt Rosa"]})  # a person's keyword
    item = ids(served)[str(refused)]
    machine = next(t["name"] for t in served.get(f"/items/{item}")["tags"] if t["source"] != "sidecar")
    served.client.request("PATCH", f"/items/{item}", body={"remove_tags": [machine]})  # a person's decision
    for path in (mine, theirs, refused):
        os.unlink(path)
    wait_for(lambda: not {str(mine), str(theirs), str(refused)} & set(ids(served)), what="them to leave the index")
    wait_for(lambda: not sidecars[mine].exists(), what="pixdex's own sidecar to go")
    assert sidecars[theirs].exists() and b"Aunt Rosa" in sidecars[theirs].read_bytes()
    assert sidecars[refused].exists() and machine.encode() in sidecars[refused].read_bytes()  # Rejected: kept


def test_a_move_out_of_a_folder_with_a_file_still_being_written_is_one_move(tmp_path: Path) -> None:
    """Found when sidecars were watched: a hard link (no close event) kept its folder "being written", the
    destination folder was rescanned alone, and the moved image lost its id. Both ends wait together."""
    from pixdex.daemon.watcher import Watcher
    from pixdex.indexer.sections import WatchSettings

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    noise(1).save(a / "moving.jpg")
    watcher = Watcher(WatchSettings(settle=1.5, debounce=0.05), [], [], [], lambda why: None)
    watcher.watch([os.fsencode(tmp_path)])
    try:
        time.sleep(0.3)
        with open(a / "growing.jpg", "wb") as handle:  # written, not closed yet: folder a is busy
            handle.write(b"\xff\xd8\xff")
            handle.flush()
            time.sleep(0.2)
            os.rename(a / "moving.jpg", b / "moving.jpg")
            early = watcher.take(0.6)
            assert early is None or not (early.shallow & {os.fsencode(b)}) or os.fsencode(a) in early.shallow
        later = watcher.take(3)
        assert later is not None
        taken = (early.shallow if early else set()) | later.shallow
        assert {os.fsencode(a), os.fsencode(b)} <= taken
    finally:
        watcher.stop()


def test_a_stopped_watcher_starts_no_observer_again(tmp_path: Path) -> None:
    """The scanner's periodic check ran during a stop and took the stopped observer for a dead one: it
    started a new one while the daemon was closing (CI's log: 'inotify (3 folder(s) watched)' after
    'stopping')."""
    from pixdex.daemon.watcher import Watcher
    from pixdex.indexer.sections import WatchSettings

    watcher = Watcher(WatchSettings(), [], [], [], lambda why: None)
    watcher.watch([os.fsencode(tmp_path)])
    (root,) = watcher.roots.values()
    assert root.observer is not None and root.observer.is_alive()
    watcher.stop()
    assert watcher.check() == [] and root.observer is None
    watcher.watch([os.fsencode(tmp_path)])
    assert root.observer is None
