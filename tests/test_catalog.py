"""The SQLite catalog: versioned schema, exact byte paths, prefix queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import FileStat
from pixdex.indexer.catalog.schema import SCHEMA_VERSION
from pixdex.indexer.errors import CatalogError


def stat(path: bytes, size: int = 10) -> FileStat:
    return FileStat(path, 1, 2, size, 3)


def test_schema_is_versioned_and_reopened(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite3")
    image_id = catalog.insert(stat(b"/a/b.jpg"), 1)
    catalog.close()
    again = Catalog(tmp_path / "c.sqlite3")
    assert again.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = again.get(image_id)
    assert row is not None and row.path == b"/a/b.jpg" and row.state == "pending"


def test_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "c.sqlite3")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(CatalogError, match="newer than this pixdex"):
        Catalog(tmp_path / "c.sqlite3")


def test_non_utf8_paths_round_trip(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite3")
    raw = b"/pics/caf\xe9/\xff.jpg"
    image_id = catalog.insert(stat(raw), 1)
    found = catalog.by_path(raw)
    assert found is not None and found.id == image_id and found.path == raw


def test_under_is_a_folder_prefix_not_a_string_prefix(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite3")
    for path in (b"/p/a/1.jpg", b"/p/a/b/2.jpg", b"/p/ab/3.jpg", b"/p/a"):
        catalog.insert(stat(path), 1)
    assert sorted(r.path for r in catalog.under(b"/p/a")) == [b"/p/a", b"/p/a/1.jpg", b"/p/a/b/2.jpg"]


def test_ids_are_positive_63_bit_and_unique(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite3")
    ids = {catalog.insert(stat(f"/{i}.jpg".encode()), 1) for i in range(200)}
    assert len(ids) == 200 and all(0 < i < 2**63 for i in ids)


def test_a_removed_folder_takes_its_unreadable_folders_along_but_not_those_still_watched(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    errors = [(b"/lib/a/x", "permission denied"), (b"/lib/a", "permission denied"), (b"/lib/a/inner/y", "gone"),
              (b"/lib/ab", "permission denied"), (b"/other/z", "permission denied")]
    with catalog.transaction():
        catalog.set_folder_errors([], [], errors)
        catalog.forget_folder_errors([b"/lib/a"], [b"/lib/a/inner", b"/other"])
    assert catalog.folder_errors() == [(b"/lib/a/inner/y", "gone"), (b"/lib/ab", "permission denied"),
                                       (b"/other/z", "permission denied")]
