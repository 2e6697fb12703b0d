"""`pixdex models list|pull|info|remove` against a local stand-in of the Hugging Face hub (HF_ENDPOINT).

The repos it serves hold the stand-in models in the published layouts — Immich's ONNX export for CLIP,
SmilingWolf's for the WD14 tagger — plus files pixdex must not download. The real `pixdex` command and
the real huggingface_hub talk HTTP to it; a pulled model is then loaded by a real `pixdex index`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PIXDEX, Env, noise
from hubserver import Hub
from served import Served, sse_events, wait_for

from pixdex.indexer import hub as hub_module


@pytest.fixture()
def hub(tmp_path: Path, model_dir: Path) -> Iterator[Hub]:
    server = Hub()
    clip = tmp_path / "repos" / "clip"
    shutil.copytree(model_dir / "clip" / "pixdex-standin-clip", clip)
    (clip / "visual" / "model.armnn").write_bytes(os.urandom(4096))  # Immich's ARM NN files: not for pixdex
    (clip / "textual" / "fp16").mkdir()
    (clip / "textual" / "fp16" / "model.armnn").write_bytes(os.urandom(4096))
    (clip / "README.md").write_text("stand-in\n")
    tagger = tmp_path / "repos" / "tagger"
    shutil.copytree(model_dir / "tagger" / "pixdex-standin-tagger", tagger)
    (tagger / "model.msgpack").write_bytes(os.urandom(4096))  # the JAX weights beside the ONNX file
    server.add("immich-app/ViT-B-32__openai", clip)
    server.add("SmilingWolf/wd-vit-tagger-v3", tagger)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def menv(env: Env, hub: Hub, tmp_path: Path) -> Env:
    """An environment whose config names the default models (not the stand-ins), in an empty model dir."""
    env.environ["HF_ENDPOINT"] = hub.url
    env.environ["HF_HOME"] = str(tmp_path / "hf")
    env.environ.pop("HF_HUB_OFFLINE", None)
    env.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    models = tmp_path / "models"
    env.config.write_text(f'[library]\nfolders = ["{env.pics}"]\n[paths]\nmodel_dir = "{models}"\n'
                          '[models]\nclip = "ViT-B-32__openai"\ntagger = "wd-vit-tagger-v3"\nbatch_size = 4\n')
    return env


def models_of(env: Env) -> dict[str, dict[str, object]]:
    return {m["name"]: m for m in json.loads(env.run("models", "list", "--json").stdout)}


def test_pull_installs_the_published_layouts_and_pixdex_indexes_with_them(menv: Env, hub: Hub,
                                                                         tmp_path: Path) -> None:
    listed = models_of(menv)
    assert listed["ViT-B-32__openai"]["installed"] == "no" and listed["ViT-B-32__openai"]["in_use"] == "[models] clip"
    assert listed["wd-vit-tagger-v3"]["in_use"] == "[models] tagger"
    assert "models pull ViT-B-32__openai" in menv.run("models", "list").stdout

    pulled = menv.run("models", "pull", "ViT-B-32__openai")
    clip = tmp_path / "models" / "clip" / "ViT-B-32__openai"
    assert f"installed {clip}" in pulled.stdout
    files = sorted(str(p.relative_to(clip)) for p in clip.rglob("*") if p.is_file())
    assert "visual/model.armnn" not in files and "README.md" not in files and "textual/fp16/model.armnn" not in files
    assert {"config.json", "visual/model.onnx", "visual/preprocess_cfg.json", "textual/model.onnx",
            "textual/tokenizer.json", "pixdex-model.json"} <= set(files)
    record = json.loads((clip / "pixdex-model.json").read_text())
    assert record["repo"] == "immich-app/ViT-B-32__openai" and record["commit"] == hub.commits[record["repo"]]
    assert not [m for m, p in hub.requests if m == "GET" and "armnn" in p]  # not even downloaded to the cache

    menv.run("models", "pull", "wd-vit-tagger-v3", "--quiet")
    listed = models_of(menv)
    assert listed["ViT-B-32__openai"]["installed"] == listed["wd-vit-tagger-v3"]["installed"] == "yes"

    noise(1).save(menv.pics / "a.png")
    noise(2).save(menv.pics / "b.png")
    summary = json.loads(menv.run("index", "--json", str(menv.pics)).stdout)
    assert summary["embedded"] == summary["tagged"] == 2 and summary["failed"] == 0
    info = json.loads(menv.run("models", "info", "ViT-B-32__openai", "--json").stdout)
    assert info["installed"] == "yes" and info["pulled"]["files"]


def test_a_pull_tells_its_whole_byte_total_from_the_first_report(menv: Env, hub: Hub, tmp_path: Path) -> None:
    """huggingface_hub's snapshot total grows as each file's download starts (a status once said 260 B
    for a 2 MB model); the pull tells the size of everything it will fetch from the start, and ends at it."""
    hub.chunk_delay = 0.005
    code = ("import json, sys; from pathlib import Path; from pixdex.indexer import hub; seen = []; "
            "hub.pull(hub.known('ViT-B-32__openai'), Path(sys.argv[1]), "
            "progress=lambda d, t, u: seen.append((d, t, u))); "
            "print(json.dumps(seen))")
    proc = subprocess.run([str(Path(PIXDEX).parent / "python"), "-c", code, str(tmp_path / "models")],
                          capture_output=True, text=True, env=menv.environ, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    repo = tmp_path / "repos" / "clip"
    patterns = hub_module.known("ViT-B-32__openai").patterns
    wanted = sum(p.stat().st_size for p in repo.rglob("*") if str(p.relative_to(repo)) in patterns)
    assert len(seen) > 3 and {(t, u) for _, t, u in seen} == {(wanted, "B")}
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen) and seen[-1][0] == wanted


def test_a_file_damaged_on_the_way_is_refused_and_the_next_pull_is_whole(menv: Env, hub: Hub,
                                                                        tmp_path: Path) -> None:
    hub.corrupt.add("visual/model.onnx")
    failed = menv.run("models", "pull", "ViT-B-32__openai", "--quiet", check=False)
    assert failed.returncode == 2
    assert "visual/model.onnx: checksum mismatch" in failed.stderr and "pull ViT-B-32__openai` again" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) <= 2  # the announcement and one error line, no traceback
    assert not (tmp_path / "models" / "clip" / "ViT-B-32__openai").exists()
    assert not list((tmp_path / "models" / "clip").iterdir())  # no staging folder left
    hub.corrupt.clear()
    menv.run("models", "pull", "ViT-B-32__openai", "--quiet")
    assert models_of(menv)["ViT-B-32__openai"]["installed"] == "yes"


def test_a_dropped_download_is_resumed(menv: Env, hub: Hub) -> None:
    hub.fail_after["visual/model.onnx"] = 100_000
    first = menv.run("models", "pull", "ViT-B-32__openai", "--quiet", check=False)
    if first.returncode != 0:  # huggingface_hub may retry within the call; either way the second pull is whole
        assert "pixdex: error:" in first.stderr and "Traceback" not in first.stderr
        menv.run("models", "pull", "ViT-B-32__openai", "--quiet")
    ranged = [p for m, p in hub.requests if m == "GET" and p.endswith("visual/model.onnx")]
    assert len(ranged) == 2  # the cut one, then the rest
    assert models_of(menv)["ViT-B-32__openai"]["installed"] == "yes"


def test_offline_pulls_come_from_the_hub_cache_and_unreachable_hubs_say_what_to_do(menv: Env, hub: Hub,
                                                                                  tmp_path: Path) -> None:
    menv.run("models", "pull", "ViT-B-32__openai", "--quiet")
    removed = menv.run("models", "remove", "ViT-B-32__openai", check=False)
    assert removed.returncode == 2 and "the config uses it ([models] clip)" in removed.stderr
    menv.run("models", "remove", "ViT-B-32__openai", "--force")
    assert not (tmp_path / "models" / "clip" / "ViT-B-32__openai").exists()

    hub.down = True
    menv.environ["HF_HUB_OFFLINE"] = "1"
    seen = len(hub.requests)
    menv.run("models", "pull", "ViT-B-32__openai", "--quiet")
    assert len(hub.requests) == seen  # not one request
    assert models_of(menv)["ViT-B-32__openai"]["installed"] == "yes"

    tagger = menv.run("models", "pull", "wd-vit-tagger-v3", "--quiet", check=False)  # never cached
    assert tagger.returncode == 2 and "HF_HUB_OFFLINE is set" in tagger.stderr
    menv.environ.pop("HF_HUB_OFFLINE")
    down = menv.run("models", "pull", "wd-vit-tagger-v3", "--quiet", check=False)
    assert down.returncode == 2 and hub.url in down.stderr and "Traceback" not in down.stderr
    assert "pixdex models pull wd-vit-tagger-v3" in down.stderr


def test_unknown_names_and_missing_repos_are_one_line_errors(menv: Env, hub: Hub) -> None:
    unknown = menv.run("models", "pull", "ViT-Q-99", check=False)
    assert unknown.returncode == 2 and "ViT-Q-99: not a model pixdex knows; known: ViT-B-32__openai" in unknown.stderr
    missing = menv.run("models", "pull", "ViT-B-16__openai", "--quiet", check=False)  # not on this hub
    assert missing.returncode == 2 and "immich-app/ViT-B-16__openai: not found on the hub" in missing.stderr
    assert "Traceback" not in missing.stderr
    info = menv.run("models", "info", "wd-eva02-large-tagger-v3").stdout
    assert "repo: SmilingWolf/wd-eva02-large-tagger-v3" in info and "installed: no" in info
    gone = menv.run("models", "remove", "wd-eva02-large-tagger-v3", check=False)
    assert gone.returncode == 2 and "not installed" in gone.stderr


def _served_with_default_models(tmp_path: Path, hub: Hub) -> Served:
    pics = tmp_path / "pics"
    pics.mkdir(exist_ok=True)
    for n in range(4):
        noise(n).save(pics / f"p{n}.png")
    environ = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
    environ.pop("HF_HUB_OFFLINE", None)
    daemon = Served(tmp_path, tmp_path / "models", [pics], environ=environ)
    daemon.config.write_text(daemon.config.read_text()
                             .replace('clip = "pixdex-standin-clip"', 'clip = "ViT-B-32__openai"')
                             .replace('tagger = "pixdex-standin-tagger"', 'tagger = "wd-vit-tagger-v3"'))
    return daemon


@pytest.mark.slow
def test_serve_pulls_missing_models_in_the_background_then_embeds_what_waited(tmp_path: Path, hub: Hub) -> None:
    hub.chunk_delay = 0.02  # slow enough to watch it go
    daemon = _served_with_default_models(tmp_path, hub)
    try:
        daemon.start()
        first = daemon.status()["daemon"]
        assert first["mode"] == "reduced"  # it answers at once, in reduced mode, while pulling
        progress = wait_for(lambda: daemon.status()["daemon"]["models_pull"].get("progress"), timeout=30,
                            what="download progress in the status")
        assert progress["model"] == "ViT-B-32__openai" and progress["unit"] == "B" and progress["total"] > 10**6
        assert 0 <= progress["done"] <= progress["total"]
        shown = daemon_cli(daemon, "status").stdout
        assert "pulling ViT-B-32__openai, wd-vit-tagger-v3 from the Hugging Face hub in the background" in shown
        pulling = [d for k, d in models_events(daemon) if d["state"] == "pulling" and d.get("progress")]
        assert pulling and pulling[-1]["progress"]["done"] == pulling[-1]["progress"]["total"]  # SSE, to the end
        wait_for(lambda: daemon.status()["daemon"]["mode"] == "full", timeout=60, what="the pulled models to load")
        wait_for(lambda: daemon.idle() and daemon.status()["waiting_for_models"] == 0, timeout=60,
                 what="the waiting images to be embedded")
        assert daemon.status()["daemon"]["models_pull"]["state"] == "pulled"
        log = daemon.log.read_text()
        assert "pulling the configured models in the background: ViT-B-32__openai, wd-vit-tagger-v3" in log
        assert (tmp_path / "models" / "tagger" / "wd-vit-tagger-v3" / "selected_tags.csv").is_file()
    finally:
        daemon.stop()


@pytest.mark.slow
def test_serve_says_why_a_pull_failed_and_takes_the_models_a_person_pulls(tmp_path: Path, hub: Hub) -> None:
    hub.down = True
    daemon = _served_with_default_models(tmp_path, hub)
    try:
        daemon.start()
        wait_for(lambda: daemon.status()["daemon"]["models_pull"].get("state") == "failed", timeout=60,
                 what="the background pull to fail")
        info = daemon.status()["daemon"]
        assert hub.url in info["models_pull"]["error"] and "pixdex models pull ViT-B-32__openai" in info["fix"]
        # One line says it (a trial's log had the hub client's five retry warnings each time, every 10 minutes).
        logged = daemon.log.read_text()
        assert logged.count("could not pull the models (retrying in 10 min)") == 1, logged[-3000:]
        assert "Retry" not in logged, logged[-3000:]
        shown = daemon_cli(daemon, "status").stdout
        assert "the background pull failed" in shown and "fix: `pixdex models pull ViT-B-32__openai`" in shown
        hub.down = False
        for name in ("ViT-B-32__openai", "wd-vit-tagger-v3"):  # what the status told the person to run
            daemon_cli(daemon, "models", "pull", name, "--quiet")
        wait_for(lambda: daemon.status()["daemon"]["mode"] == "full", timeout=30, what="full mode")
        wait_for(lambda: daemon.idle() and daemon.status()["waiting_for_models"] == 0, timeout=60,
                 what="the waiting images to be embedded")
    finally:
        daemon.stop()


def models_events(daemon: Served) -> list[tuple[str, dict[str, object]]]:
    """The `models` events from the start (Last-Event-ID 0), up to the one that says the pull ended."""
    import asyncio

    import aiohttp

    async def run() -> list[tuple[str, dict[str, object]]]:
        seen: list[tuple[str, dict[str, object]]] = []
        connector = aiohttp.UnixConnector(path=str(daemon.socket_path))
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.get("http://localhost/events", headers={"Last-Event-ID": "0"},
                               timeout=aiohttp.ClientTimeout(total=60)) as response:
            async for kind, data in sse_events(response):
                if kind == "models":
                    seen.append((kind, data))
                    if seen[-1][1]["state"] in ("pulled", "failed"):
                        return seen
        return seen

    return asyncio.run(run())


def daemon_cli(daemon: Served, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(PIXDEX), "--config", str(daemon.config), *args], env=daemon.environ,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_hub_warning_reaches_the_log_once() -> None:
    """huggingface_hub's retry warnings were logged twice (its own handler, then pixdex's through propagation)."""
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(format='pixdex: %(message)s'); "
            "from pixdex.indexer import hub; hub.one_log_line_each(); "
            "logging.getLogger('huggingface_hub.utils._http').warning('retrying in 1s')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stderr
    assert err.count("retrying in 1s") == 1, err
