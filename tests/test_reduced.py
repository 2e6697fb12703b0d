"""Reduced mode: with no models, names, folders and each file's own metadata are indexed and
searchable, and the images wait for models; once models are there, they are embedded and tagged
without being registered again, and nothing made by models is thrown away while they are missing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import Env, make_library

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.core import Indexer
from pixdex.indexer.settings import load_config


def _config(env: Env, model_dir: Path | None = None):  # type: ignore[no-untyped-def]
    config = load_config(env.config, env.environ)
    if model_dir is not None:
        config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, model_dir=str(model_dir)))
    return config


def _index(config, roots: list[Path]) -> Indexer:  # type: ignore[no-untyped-def]
    indexer = Indexer(config, reduced="if unloadable")
    indexer.scan(roots)
    indexer.drain()
    return indexer


def test_without_models_names_and_metadata_are_searchable_then_models_embed_them(env: Env, tmp_path: Path) -> None:
    make_library(env.pics)
    reduced = _config(env, tmp_path / "no-models")
    with _index(reduced, [env.pics]) as indexer:
        assert not indexer.info.has_models
        assert "no-models" in indexer.info.missing
    catalog = Catalog(env.data / "catalog.sqlite3", read_only=True)
    assert catalog.waiting_for_models() == 9
    assert catalog.counts()["done"] == 9
    assert sum(catalog.queue_counts().values()) == 0
    assert catalog.db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0
    sunset = catalog.by_path(str(env.pics / "holiday" / "beach_sunset_01.jpg").encode())
    assert sunset is not None and sunset.camera and sunset.taken and sunset.width == 120

    from pixdex.daemon.offline import open_search

    results = open_search(reduced).search("beach camera:canon", k=20)
    assert sorted(Path(h.path).name for h in results.hits) == ["beach_sunset_01.jpg", "beach_sunset_02.jpg"]
    assert any("text results only" in n for n in results.notes)
    note = next(n for n in results.notes if "text results only" in n)  # every search says it: short, and where to look
    assert len(note) < 150 and "pixdex status" in note, note

    # A second reduced run finds nothing to do: the waiting images are as indexed as they can be.
    with Indexer(reduced, reduced="if unloadable") as indexer:
        report = indexer.scan([env.pics])
        assert report.queued == 0 and report.unchanged == 9

    with Indexer(_config(env), reduced="if unloadable") as indexer:
        assert indexer.info.has_models
        report = indexer.scan([env.pics])
        assert report.queued == 9 and report.new == 0
        assert catalog.queue_counts()["backfill"] == 9
        indexer.drain()
    assert catalog.waiting_for_models() == 0
    assert catalog.db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 9

    # Models gone again: embedded images keep their vectors and tags; nothing is queued.
    with Indexer(reduced, reduced="if unloadable") as indexer:
        assert indexer.scan([env.pics]).queued == 0
    assert catalog.db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 9
    catalog.close()


def test_never_reduced_a_missing_model_stops_with_its_path(env: Env, tmp_path: Path) -> None:
    from pixdex.indexer.errors import ModelError

    with pytest.raises(ModelError, match="no-models"):
        Indexer(_config(env, tmp_path / "no-models"))


def test_pixdex_index_without_models_indexes_in_reduced_mode_and_says_so(env: Env, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """As the daemon and rebuild do: names, folders and metadata are indexed, and the note says what is missing
    and how to get it (it used to stop with "clip model … absent")."""
    make_library(env.pics)
    text = env.config.read_text()
    model_dir = text.split("model_dir = ", 1)[1].split("\n", 1)[0]
    env.config.write_text(text.replace(model_dir, json.dumps(str(tmp_path / "no-models"))))
    status, out, err = env.cli("index", capsys=capsys)
    assert status == 0, err
    assert out.startswith("9 new") and "no models" in err and "pixdex models" in err
    status, out, _ = env.cli("search", "beach", "--json", capsys=capsys)
    assert {Path(h["path"]).name for h in json.loads(out)["hits"]} >= {"beach_sunset_01.jpg", "beach_sunset_02.jpg"}
