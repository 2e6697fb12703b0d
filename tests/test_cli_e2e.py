"""The `pixdex` command as a person starts it: separate processes, real files, real stand-in models."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import PIXDEX, Env, make_library, write_config

pytestmark = pytest.mark.slow


def test_standin_models_command_writes_the_real_layout(tmp_path: Path, env: Env) -> None:
    directory = tmp_path / "fresh-models"
    proc = env.run("models", "standin", "--dir", str(directory))
    assert "STAND-IN" in proc.stderr and "meaningless" in proc.stderr
    for rel in ("clip/pixdex-standin-clip/config.json", "clip/pixdex-standin-clip/visual/model.onnx",
                "clip/pixdex-standin-clip/visual/preprocess_cfg.json", "clip/pixdex-standin-clip/textual/model.onnx",
                "clip/pixdex-standin-clip/textual/tokenizer.json", "tagger/pixdex-standin-tagger/model.onnx",
                "tagger/pixdex-standin-tagger/selected_tags.csv"):
        assert (directory / rel).is_file(), rel
    header = (directory / "tagger/pixdex-standin-tagger/selected_tags.csv").read_text().splitlines()[0]
    assert header == "tag_id,name,category,count"
    assert not [p for p in directory.rglob(".*") if p.name.startswith(".pixdex")]  # no staging left behind


def test_index_search_similar_status_failures_in_processes(env: Env) -> None:
    files = make_library(env.pics)
    (env.pics / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    first = json.loads(env.run("index", "--json").stdout)
    assert first["new"] == len(files) + 1 and first["failed"] == 1
    second = json.loads(env.run("index", "--json").stdout)
    assert second["decoded"] == 0 and second["inference_calls"] == 0
    hits = json.loads(env.run("search", "tram", "--json").stdout)["hits"]
    assert Path(hits[0]["path"]).name == "old_tram.bmp"
    nul = env.run("search", "ext:png", "-0").stdout
    assert sorted(Path(p).name for p in nul.split("\0") if p) == ["green_leaves.png", "red_flower.png"]
    human = env.run("search", "beach sunset", "-k", "2").stdout.splitlines()
    assert len(human) == 2 and "vector #" in human[0]
    similar = json.loads(env.run("similar", str(files["garden/red_flower.png"]), "-k", "1", "--json").stdout)
    assert len(similar["hits"]) == 1
    status = json.loads(env.run("status", "--json").stdout)
    assert status["counts"] == {"done": len(files), "pending": 0, "failed": 1}
    failures = json.loads(env.run("failures", "--json").stdout)
    assert [Path(f["path"]).name for f in failures] == ["broken.jpg"]
    bad = env.run("search", "x", "-k=-3", check=False)
    assert bad.returncode == 2 and "out of range" in bad.stderr and "Traceback" not in bad.stderr


def test_run_is_the_main_job_index_then_one_shot_search(env: Env) -> None:
    make_library(env.pics)
    proc = env.run("run", "old tram")
    assert "9 new" in proc.stderr
    assert "old_tram.bmp" in proc.stdout.splitlines()[0]


def test_missing_models_explain_what_to_do(tmp_path: Path, env: Env) -> None:
    """Without model files `pixdex index` indexes what it can (reduced mode, as the daemon and rebuild do) and
    says how to get the models; it no longer stops."""
    config = tmp_path / "other.toml"
    write_config(config, tmp_path / "no-models", [env.pics])
    proc = subprocess.run([str(PIXDEX), "--config", str(config), "index"], env=env.environ, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pixdex models standin" in proc.stderr and "Traceback" not in proc.stderr


def test_changed_model_means_reembedding_not_a_crash(tmp_path: Path, env: Env) -> None:
    from pixdex.indexer.export import write_standin_clip, write_standin_tagger

    make_library(env.pics)
    env.run("index")
    other = tmp_path / "models2"
    write_standin_clip(other, seed=1)  # same name and architecture, other weights: another model id
    write_standin_tagger(other)
    write_config(env.config, other, [env.pics])
    summary = json.loads(env.run("index", "--json").stdout)
    assert summary["embedded"] == 9 and summary["failed"] == 0, summary
    manifest = json.loads((env.data / "vectors" / "vectors.json").read_text())
    assert manifest["model"].startswith("pixdex-standin-clip@") and manifest["ndim"] == 32


def test_broken_model_stops_the_run_and_blames_the_model(tmp_path: Path, env: Env, model_dir: Path) -> None:
    import shutil

    make_library(env.pics)
    broken = tmp_path / "broken-models"
    shutil.copytree(model_dir, broken)
    (broken / "clip/pixdex-standin-clip/visual/model.onnx").write_bytes(b"not a protobuf")
    write_config(env.config, broken, [env.pics])
    proc = env.run("index", check=False)
    assert proc.returncode == 2 and "cannot load this model" in proc.stderr
    assert json.loads(env.run("failures", "--json").stdout) == []  # no file is blamed
    write_config(env.config, model_dir, [env.pics])
    assert json.loads(env.run("index", "--json").stdout)["embedded"] == 9  # and all are indexed once fixed


def test_second_indexer_on_the_same_data_is_refused(env: Env) -> None:
    import fcntl

    make_library(env.pics)
    env.data.mkdir(parents=True, exist_ok=True)
    with open(env.data / "index.lock", "w") as held:
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = env.run("index", check=False)
    assert proc.returncode == 2 and "already being indexed by pid 4242" in proc.stderr
    assert json.loads(env.run("index", "--json").stdout)["new"] == 9  # free again


def test_standin_without_the_export_extra_says_what_to_install(env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('No module named torch (hidden by the test)')\n")
    environ = dict(env.environ, PYTHONPATH=str(blocker))
    proc = subprocess.run([str(PIXDEX), "models", "standin", "--dir", str(tmp_path / "m")], env=environ,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "the export extra" in proc.stderr and "'.[export]'" in proc.stderr
    assert "Traceback" not in proc.stderr
