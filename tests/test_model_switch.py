"""A new CLIP model re-embeds the library in the background: searches keep the old model's text tower and
vectors until every image that has an old vector also has a new one, then the new model becomes live;
a crash at any moment of the switch leaves the stores in step, and the switch resumes."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from conftest import Env, make_library, write_config
from consistency import check_consistent

NEW = "pixdex-standin-clip-b"


@pytest.fixture(scope="module")
def two_models(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's stand-ins plus a second stand-in CLIP (other random weights), in a folder of their own."""
    from pixdex.indexer.export import write_standin_clip

    directory = tmp_path_factory.mktemp("two-models")
    shutil.copytree(model_dir, directory, dirs_exist_ok=True)
    write_standin_clip(directory, seed=1, name=NEW)
    return directory


def use(env: Env, models: Path, clip: str, extra: str = "") -> None:
    write_config(env.config, models, [env.pics], extra)
    env.config.write_text(env.config.read_text().replace('clip = "pixdex-standin-clip"', f'clip = "{clip}"'))


def catalog(env: Env) -> sqlite3.Connection:
    return sqlite3.connect(env.data / "catalog.sqlite3")


def live(env: Env) -> str:
    return str(catalog(env).execute("SELECT model FROM live").fetchone()[0])


def vector_side(env: Env, query: str) -> dict[int, tuple[int, float]]:
    """id → (vector rank, vector score) of a search, through the service a CLI or the daemon uses."""
    from pixdex.indexer.settings import load_config
    from pixdex.query.reader import Reader
    from pixdex.query.service import SearchService

    config = load_config(env.config, env.environ)
    results = SearchService(config, Reader(config.layout, config.index)).search(query, k=50)
    assert all(h.vector_rank is not None for h in results.hits)
    return {h.id: (h.vector_rank, round(h.vector_score or 0.0, 3)) for h in results.hits}  # f16 file or f32 delta


def test_searches_use_the_old_vectors_until_the_new_model_has_embedded_every_image(
        env: Env, two_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pixdex.daemon.stored import stored_status as status
    from pixdex.indexer.settings import load_config

    make_library(env.pics)
    use(env, two_models, "pixdex-standin-clip")
    env.index_json(capsys)
    old_live = live(env)
    before = vector_side(env, "boats at sea")
    assert len(before) == 9

    # The new model re-embeds one folder of three: six images still have only old vectors.
    use(env, two_models, NEW)
    summary = env.index_json(capsys, env.pics / "holiday")
    assert summary["embedded"] == 3
    assert live(env) == old_live
    assert vector_side(env, "boats at sea") == before  # same text tower, same vectors: nothing lost meanwhile
    _, out, _ = env.cli("search", "boats at sea", capsys=capsys)
    _, _, err = env.cli("search", "boats at sea", capsys=capsys)
    assert "re-embedding the library with pixdex-standin-clip-b" in err
    switch = status(load_config(env.config, env.environ))["models"]["clip"]["reembedding"]
    assert switch == {"from": "pixdex-standin-clip", "to": NEW, "left": 6}
    _, out, _ = env.cli("status", capsys=capsys)
    assert "searches use pixdex-standin-clip until the last 6 image(s)" in out
    status_code, _, err = env.cli("models", "remove", "pixdex-standin-clip", capsys=capsys)
    assert status_code == 2 and "searches still use its vectors" in err

    # The rest: the new model becomes live, the old vectors go, and searches use the new model's.
    summary = env.index_json(capsys)
    assert summary["embedded"] == 6
    assert live(env).startswith(NEW + "@")
    models = {m for (m,) in catalog(env).execute("SELECT DISTINCT model FROM embeddings")}
    assert models == {live(env)}
    after = vector_side(env, "boats at sea")
    assert after != before and len(after) == 9
    assert after == exact_ranking(env, "boats at sea", two_models / "clip" / NEW)
    _, _, err = env.cli("search", "boats at sea", capsys=capsys)
    assert "re-embedding" not in err
    assert status(load_config(env.config, env.environ))["models"]["clip"]["reembedding"] is None
    check_consistent(env.data, env.pics)


def exact_ranking(env: Env, query: str, clip_dir: Path) -> dict[int, tuple[int, float]]:
    """The vector side recomputed by brute force from the catalog's embeddings and the model's text tower."""
    from pixdex.indexer.catalog.rows import blob_vector
    from pixdex.indexer.embedder import ClipModel

    rows = catalog(env).execute("SELECT image_id, vector FROM embeddings").fetchall()
    text = ClipModel(clip_dir).embed_texts([query])[0]
    scores = sorted(((float(blob_vector(v) @ text), int(i)) for i, v in rows), reverse=True)
    return {i: (rank, pytest.approx(round(score, 3), abs=1.1e-3)) for rank, (score, i) in enumerate(scores, 1)}


def test_a_switch_given_up_drops_the_new_vectors_and_keeps_the_old_model_live(
        env: Env, two_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_library(env.pics)
    use(env, two_models, "pixdex-standin-clip")
    env.index_json(capsys)
    old_live = live(env)
    before = vector_side(env, "a red flower")
    use(env, two_models, NEW)
    env.index_json(capsys, env.pics / "garden")
    assert (env.data / "vectors" / "next" / "vectors.json").exists()
    use(env, two_models, "pixdex-standin-clip")  # back before the switch finished
    env.index_json(capsys)
    assert live(env) == old_live
    assert {m for (m,) in catalog(env).execute("SELECT DISTINCT model FROM embeddings")} == {old_live}
    assert vector_side(env, "a red flower") == before
    check_consistent(env.data, env.pics)


@pytest.mark.timeout(900)
def test_kill_9_during_a_model_switch_keeps_the_old_vectors_searchable_and_resumes(
        env: Env, two_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_core import make_tree, run_index

    rng = random.Random(3)
    make_tree(env.pics, rng, 90)
    fast = "[pipeline]\ncommit_items = 8\ncommit_seconds = 0.2\n[index]\nsave_changes = 20\n"
    use(env, two_models, "pixdex-standin-clip", fast)
    run_index(env)
    old_live = live(env)
    images = catalog(env).execute("SELECT count(*) FROM images").fetchone()[0]
    use(env, two_models, NEW, fast)
    for _ in range(4):
        run_index(env, kill_after=rng.uniform(0.4, 2.5))
        db = catalog(env)
        now = str(db.execute("SELECT model FROM live").fetchone()[0])
        if now == old_live:  # every image is still findable by the old model's vectors
            old = db.execute("SELECT count(*) FROM embeddings WHERE model = ?", (old_live,)).fetchone()[0]
            assert old == images
            assert vector_side(env, "a quiet street")  # and a reader searches them
        else:
            assert now.startswith(NEW + "@")
            break
    run_index(env)
    assert live(env).startswith(NEW + "@")
    check_consistent(env.data, env.pics)
    assert len(vector_side(env, "a quiet street")) == min(50, images)


@pytest.mark.slow
def test_the_daemon_re_embeds_after_a_reload_and_searches_go_on_meanwhile(tmp_path: Path, two_models: Path) -> None:
    from served import Served, wait_for

    pics = tmp_path / "pics"
    make_library(pics)
    daemon = Served(tmp_path, two_models, [pics], extra="[pipeline]\ncommit_items = 2\n").start()
    try:
        wait_for(lambda: daemon.idle() and daemon.status()["counts"]["done"] == 9, timeout=60, what="the library")
        before = [h["id"] for h in daemon.get("/search", q="boats at sea", k=9)["hits"]]
        daemon.post("/pause")
        daemon.config.write_text(daemon.config.read_text().replace('clip = "pixdex-standin-clip"', f'clip = "{NEW}"'))
        os.kill(daemon.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]  # as `pixdex reload` does
        switch = wait_for(lambda: daemon.status()["models"]["clip"]["reembedding"], timeout=60,
                          what="the re-embedding to be announced")
        assert switch == {"from": "pixdex-standin-clip", "to": NEW, "left": 9}
        wait_for(lambda: daemon.status()["queue"]["backfill"] == 9, timeout=60, what="every image queued for it")
        meanwhile = daemon.get("/search", q="boats at sea", k=9)
        assert [h["id"] for h in meanwhile["hits"]] == before  # the old vectors, all of them
        assert any("re-embedding the library" in n for n in meanwhile["notes"])
        daemon.post("/resume")
        wait_for(lambda: daemon.status()["models"]["clip"]["live"].startswith(NEW + "@"), timeout=120,
                 what="the new model to become live")
        assert daemon.status()["models"]["clip"]["reembedding"] is None
        after = daemon.get("/search", q="boats at sea", k=9)
        assert not any("re-embedding" in n for n in after["notes"]) and len(after["hits"]) == 9
    finally:
        daemon.stop()
