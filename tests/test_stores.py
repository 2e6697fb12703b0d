"""The stores directly: diff_tree against a real catalog, the writer's transactions and generations,
the text index's manifest and rebuild."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import tantivy
from conftest import gradient, noise

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import FileStat
from pixdex.indexer.digest import content_hash
from pixdex.indexer.fulltext import SCHEMA_VERSION, FullText, open_for_reading
from pixdex.indexer.layout import Layout
from pixdex.indexer.scan.diff import diff_tree
from pixdex.indexer.sections import IndexSettings, PipelineSettings
from pixdex.indexer.vectors import VectorIndex
from pixdex.indexer.writer import Writer
from pixdex.indexer.writer.commands import Indexed

MODELS = ("clip@1", None)


def open_writer(root: Path) -> Writer:
    layout = Layout(root / "data")
    return Writer(Catalog(layout.catalog), FullText(layout), VectorIndex(layout, "clip@1", 4, IndexSettings()),
                  PipelineSettings(commit_seconds=0.05), MODELS)


def index_all(writer: Writer, pics: Path) -> None:
    """What the pipeline would commit: every queued file done, with its real hash."""
    catalog = writer.catalog
    entries = Catalog(catalog.path, read_only=True).queued(1000)
    items = []
    for e in entries:
        data = e.row.fspath.read_bytes()
        st = FileStat.of(e.row.path, os.stat(e.row.path))
        items.append(Indexed(e.row.id, e.seq, st, content_hash(data), 1, 1, None, None, [], _unit()))
    writer.store(items).result()


def _unit() -> object:
    import numpy as np

    return np.array([1, 0, 0, 0], np.float32)


def diff(writer: Writer, pics: Path) -> object:
    return diff_tree(Catalog(writer.catalog.path, read_only=True), [os.fsencode(pics)], [".*"], False, MODELS)


def test_diff_tree_sorts_every_file_into_exactly_one_kind(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    (pics / "a").mkdir(parents=True)
    for n, name in enumerate(["keep.png", "touch.png", "change.png", "rename.png", "copy.png", "gone.png", "bad.png"]):
        gradient(n).save(pics / "a" / name)
    writer = open_writer(tmp_path)
    first = diff(writer, pics)
    assert len(first.new) == 7 and not (first.changed or first.unchanged or first.moved or first.removed)
    writer.register(first.new, [], [], [], []).result()
    index_all(writer, pics)
    writer.flush()
    bad = writer.catalog.by_path(os.fsencode(pics / "a" / "bad.png"))
    writer.fail(bad.id, 0, bad.stat, bad.hash, "broken").result()
    writer.flush()

    os.utime(pics / "a" / "touch.png", ns=(1, 1))  # new mtime, same content: changed by stat
    noise(9).save(pics / "a" / "change.png")
    (pics / "a" / "rename.png").rename(pics / "renamed.png")  # same inode
    shutil.copyfile(pics / "a" / "copy.png", pics / "copied.png")  # new inode, same bytes
    (pics / "a" / "copy.png").unlink()
    (pics / "a" / "gone.png").unlink()
    gradient(99).save(pics / "new.png")
    found = diff(writer, pics)
    name = lambda p: Path(os.fsdecode(p)).name  # noqa: E731
    assert [name(st.path) for st in found.new] == ["new.png"]
    assert sorted(name(st.path) for _, st in found.changed) == ["change.png", "touch.png"]
    assert [name(r.path) for r in found.unchanged] == ["keep.png"]
    assert [name(r.path) for r in found.failed] == ["bad.png"]
    assert sorted((name(r.path), name(st.path)) for r, st in found.moved) == [
        ("copy.png", "copied.png"), ("rename.png", "renamed.png")]
    assert [name(r.path) for r in found.removed] == ["gone.png"]
    assert found.stale == [] and found.errors == []
    writer.close()


def test_changed_folders_gone_with_the_folders_above_them_are_moves_unless_the_library_root_went(
        tmp_path: Path) -> None:
    """What the watcher passes for `mv trip voyage` (each folder that changed, without its subfolders: trip/sub
    went too), and for an unmounted disk."""
    pics = tmp_path / "pics"
    (pics / "trip" / "sub").mkdir(parents=True)
    gradient(1).save(pics / "trip" / "top.png")
    gradient(2).save(pics / "trip" / "sub" / "deep.png")
    writer = open_writer(tmp_path)
    writer.register(diff(writer, pics).new, [], [], [], []).result()
    index_all(writer, pics)
    writer.flush()

    def changed(*folders: Path) -> object:
        paths = [os.fsencode(f) for f in folders]
        return diff_tree(Catalog(writer.catalog.path, read_only=True), paths, [".*"], False, MODELS,
                         [os.fsencode(pics)], paths)

    name = lambda p: os.path.relpath(os.fsdecode(p), pics)  # noqa: E731
    (pics / "trip").rename(pics / "voyage")
    moved = changed(pics / "trip", pics / "trip" / "sub", pics / "voyage", pics / "voyage" / "sub")
    assert sorted((name(r.path), name(st.path)) for r, st in moved.moved) == [
        ("trip/sub/deep.png", "voyage/sub/deep.png"), ("trip/top.png", "voyage/top.png")]
    assert moved.errors == [] and moved.removed == [] and moved.new == []

    (pics / "voyage").rename(pics / "trip")
    pics.rename(tmp_path / "unmounted")  # the library root and all below it
    gone = changed(pics / "trip" / "sub")
    assert gone.errors == [(os.fsencode(pics / "trip" / "sub"), "not a folder (missing, or a file)")]
    assert gone.removed == [] and gone.moved == []
    writer.close()


def test_models_changing_makes_done_rows_stale_not_new(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    gradient(1).save(pics / "x.png")
    writer = open_writer(tmp_path)
    writer.register(diff(writer, pics).new, [], [], [], []).result()
    index_all(writer, pics)
    writer.flush()
    other = diff_tree(Catalog(writer.catalog.path, read_only=True), [os.fsencode(pics)], [], False, ("clip@2", None))
    assert len(other.stale) == 1 and not other.new and not other.unchanged
    writer.close()


def test_a_failing_command_rolls_back_alone_and_others_in_its_group_commit(tmp_path: Path) -> None:
    writer = open_writer(tmp_path)
    generation = writer.generation
    good = writer.register([FileStat(b"/p/ok.jpg", 1, 1, 1, 1)], [], [], [], [])

    def broken(catalog: Catalog, gen: int) -> None:
        catalog.insert(FileStat(b"/p/half.jpg", 1, 2, 1, 1), gen)
        raise RuntimeError("disk on fire")

    bad = writer.submit(broken)
    writer.flush()
    good.result()
    with pytest.raises(RuntimeError, match="disk on fire"):
        bad.result()
    catalog = Catalog(writer.catalog.path, read_only=True)
    assert [r.path for r in catalog.under(b"/p")] == [b"/p/ok.jpg"]  # half.jpg was rolled back
    assert writer.generation > generation
    before = writer.generation
    writer.register([], [], [], [], []).result()  # a commit that changes nothing
    writer.flush()
    assert writer.generation == before and catalog.generation() == before
    writer.close()


def test_text_index_records_its_generation_and_a_reader_creates_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    assert open_for_reading(layout) is None and not layout.root.exists()
    writer = open_writer(tmp_path)
    writer.register([FileStat(b"/p/sunny_beach.jpg", 1, 1, 1, 10**18)], [], [], [], []).result()
    row = next(writer.catalog.under(b"/p"))
    writer.store([Indexed(row.id, 0, row.stat, "h", 1, 1, None, None, [{"name": "sand"}], _unit())]).result()
    generation = writer.flush()
    manifest = json.loads(layout.fulltext_manifest.read_text())
    assert manifest == {"schema": SCHEMA_VERSION, "generation": generation}
    index = open_for_reading(layout)
    assert index is not None
    searcher = index.searcher()
    hits = searcher.search(index.parse_query("sand", ["tags"]), 5).hits
    assert [searcher.doc(a)["path"][0] for _, a in hits] == ["/p/sunny_beach.jpg"]
    writer.close()


def test_text_index_of_another_schema_is_moved_aside_and_rebuilt_from_the_catalog(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    writer = open_writer(tmp_path)
    writer.register([FileStat(b"/p/dune.jpg", 1, 1, 1, 10**18)], [], [], [], []).result()
    row = next(writer.catalog.under(b"/p"))
    writer.store([Indexed(row.id, 0, row.stat, "h", 1, 1, None, None, [], _unit())]).result()
    writer.close()
    layout.fulltext_manifest.write_text(json.dumps({"schema": SCHEMA_VERSION - 1, "generation": 3}))
    (layout.fulltext / "stale-file-of-the-old-schema").write_text("x")
    reopened = open_writer(tmp_path)
    assert reopened.fulltext.reset_reason and "rebuilding" in reopened.fulltext.reset_reason
    assert not (layout.fulltext / "stale-file-of-the-old-schema").exists()
    index = open_for_reading(layout)
    assert index is not None and index.searcher().num_docs == 1
    assert index.searcher().search(tantivy.Query.all_query(), 1).hits
    reopened.close()


def test_queue_order_is_asked_then_new_or_changed_then_backfill_and_entries_merge(tmp_path: Path) -> None:
    from pixdex.indexer.catalog.rows import ASKED, BACKFILL, CHANGED

    writer = open_writer(tmp_path)
    writer.register([FileStat(f"/p/{n}.jpg".encode(), 1, n, 1, 1) for n in range(6)], [], [], [], []).result()
    writer.flush()
    catalog = Catalog(writer.catalog.path, read_only=True)
    ids = [r.id for r in sorted(catalog.under(b"/p"), key=lambda r: r.ino)]
    seqs = {e.row.id: e.seq for e in catalog.queued(10)}
    writer.store([Indexed(i, seqs[i], FileStat(b"", 1, n, 1, 1), "h", 1, 1, None, None, [], _unit())
                  for n, i in enumerate(ids[:4])]).result()
    writer.enqueue(ids[:2], BACKFILL, "model changed").result()
    writer.enqueue([ids[3]], ASKED, "asked for").result()
    writer.enqueue([ids[4]], BACKFILL, "already queued as new: keeps the more urgent priority").result()
    writer.flush()
    order = [(e.row.id, e.priority) for e in catalog.queued(10)]
    assert order == [(ids[3], ASKED), (ids[4], CHANGED), (ids[5], CHANGED), (ids[0], BACKFILL), (ids[1], BACKFILL)]
    assert catalog.queue_counts() == {"asked": 1, "new/changed": 2, "backfill": 2}
    writer.close()


def test_reindex_asks_for_inference_even_when_the_content_is_unchanged(env: object, capsys: object) -> None:
    from conftest import make_library

    from pixdex.indexer.core import Indexer
    from pixdex.indexer.settings import load_config

    config = load_config(env.config, env.environ)  # type: ignore[attr-defined]
    make_library(env.pics)  # type: ignore[attr-defined]
    with Indexer(config) as indexer:
        indexer.scan([env.pics])  # type: ignore[attr-defined]
        indexer.drain()
        before = indexer.stats.embedded
        assert indexer.reindex([env.pics / "garden"]) == 3  # type: ignore[attr-defined]
        indexer.drain()
        assert indexer.stats.embedded - before == 3


def test_a_data_directory_from_the_foundation_is_upgraded_without_reembedding(env: object, capsys: object) -> None:
    """Schema 1 had no stored embeddings, queue or generations: its vector file's vectors are adopted."""
    import sqlite3

    from conftest import make_library

    make_library(env.pics)  # type: ignore[attr-defined]
    env.index_json(capsys)  # type: ignore[attr-defined]
    _, before, _ = env.cli("search", "tram", "--json", capsys=capsys)  # type: ignore[attr-defined]
    data = env.data  # type: ignore[attr-defined]
    db = sqlite3.connect(data / "catalog.sqlite3")  # back to what pixdex 0.1's index left
    db.executescript("DROP TABLE queue; DROP TABLE embeddings; DROP TABLE tombstones; DROP TABLE meta; "
                     "DROP TABLE collections; DROP TABLE live; "
                     "DROP TABLE sidecar_drops; DROP TABLE folder_errors; DROP TABLE phashes; "
                     "DROP INDEX images_gen; DROP INDEX images_inode; "
                     "ALTER TABLE images DROP COLUMN gen; ALTER TABLE images DROP COLUMN side; "
                     "ALTER TABLE images DROP COLUMN rejected; ALTER TABLE images DROP COLUMN embedded; "
                     "ALTER TABLE images DROP COLUMN facts; ALTER TABLE images DROP COLUMN side_hash; "
                     "ALTER TABLE images DROP COLUMN described; ALTER TABLE images DROP COLUMN llm; "
                     "ALTER TABLE images DROP COLUMN describe_error; ALTER TABLE images DROP COLUMN ocr; "
                     "ALTER TABLE images DROP COLUMN ocr_by; ALTER TABLE images DROP COLUMN ocr_error; "
                     "PRAGMA user_version = 1;")
    db.close()
    manifest = json.loads((data / "vectors" / "vectors.json").read_text())
    del manifest["generation"]
    (data / "vectors" / "vectors.json").write_text(json.dumps(manifest))
    (data / "fulltext" / "pixdex.json").unlink()
    summary = env.index_json(capsys)  # type: ignore[attr-defined]
    assert (summary["embedded"], summary["decoded"], summary["unchanged"]) == (0, 0, 9)
    assert summary["hashed"] == 9  # perceptual hashes filled in, without a model
    _, after, _ = env.cli("search", "tram", "--json", capsys=capsys)  # type: ignore[attr-defined]
    assert json.loads(after)["hits"] == json.loads(before)["hits"]
    from consistency import check_consistent

    check_consistent(data, env.pics)  # type: ignore[attr-defined]


def test_a_file_moved_over_an_indexed_one_keeps_its_id_and_ends_the_other(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    for n in range(4):
        gradient(n).save(pics / f"p{n}.png")
    writer = open_writer(tmp_path)
    writer.register(diff(writer, pics).new, [], [], [], []).result()
    index_all(writer, pics)
    writer.flush()
    ids = {r.fspath.name: r.id for r in writer.catalog.under(os.fsencode(pics))}
    (pics / "p1.png").rename(pics / "p0.png")  # over an indexed file
    (pics / "p2.png").rename(pics / "tmp.png")  # a swap through a third name
    (pics / "p3.png").rename(pics / "p2.png")
    (pics / "tmp.png").rename(pics / "p3.png")
    found = diff(writer, pics)
    name = lambda p: Path(os.fsdecode(p)).name  # noqa: E731
    assert sorted((name(r.path), name(st.path)) for r, st in found.moved) == [
        ("p1.png", "p0.png"), ("p2.png", "p3.png"), ("p3.png", "p2.png")]
    assert [name(r.path) for r in found.removed] == ["p0.png"]
    assert found.new == [] and found.changed == []
    writer.register(found.new, found.changed, found.stale, found.moved, found.removed).result()
    writer.flush()
    after = {r.fspath.name: r.id for r in writer.catalog.under(os.fsencode(pics))}
    assert after == {"p0.png": ids["p1.png"], "p2.png": ids["p3.png"], "p3.png": ids["p2.png"]}
    writer.close()


def test_the_data_directory_and_the_thumbnail_cache_are_the_owners_alone(tmp_path: Path) -> None:
    """The catalog holds every path, keyword and text read from the person's images (found by a trial: 0644
    in a 0755 directory, readable by every user of the machine)."""
    from pixdex.indexer.core import lock_data_dir
    from pixdex.indexer.thumbnails import make_thumbnail, own_cache_path

    fresh, old = tmp_path / "fresh" / "pixdex", tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)  # as an older pixdex left it
    for root in (fresh, old):
        lock_data_dir(root, root / "index.lock").close()
        assert root.stat().st_mode & 0o777 == 0o700, root
    image = tmp_path / "a.png"
    noise(1).save(image)
    dest = own_cache_path(tmp_path / "cache", 1, image.stat().st_mtime_ns, "256")
    made = Path(make_thumbnail(bytes(image), str(dest), 256, 10**8))
    assert made.parent.stat().st_mode & 0o777 == 0o700
