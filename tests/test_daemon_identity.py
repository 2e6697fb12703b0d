"""A daemon answers only for its own library: with one running, the commands of another data directory
(another config, the same XDG_RUNTIME_DIR and so the same socket) work on their own data directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import PIXDEX, noise, write_config
from served import Served, wait_for

pytestmark = pytest.mark.slow


def test_another_data_directory_is_not_answered_by_the_running_daemon(tmp_path: Path, model_dir: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    noise(1).save(mine / "mine.png")
    daemon = Served(tmp_path / "a", model_dir, [mine]).start()
    try:
        wait_for(lambda: len(daemon.listed(mine)) == 1, what="the daemon's library")
        other = tmp_path / "other"
        (other / "pics").mkdir(parents=True)
        noise(2).save(other / "pics" / "theirs.png")
        config = other / "config.toml"
        write_config(config, model_dir, [other / "pics"])
        environ = {**daemon.environ, "XDG_DATA_HOME": str(other / "data")}  # the same socket, another library

        def pixdex(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(PIXDEX), "--config", str(config), *args], env=environ, capture_output=True,
                                  text=True, timeout=120)

        status = pixdex("status", "--json")
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info.get("daemon") is None and info["other_daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]
        assert info["paths"]["data"] == str(other / "data" / "pixdex")
        assert info["other_daemon"]["data_dir"] == str(daemon.data)
        indexed = pixdex("index", "--json")
        assert indexed.returncode == 0, indexed.stderr
        assert json.loads(indexed.stdout)["new"] == 1
        found = pixdex("search", "theirs", "--json")
        assert [Path(h["path"]).name for h in json.loads(found.stdout)["hits"]] == ["theirs.png"]
        # The daemon's own library is still answered by the daemon.
        own = subprocess.run([str(PIXDEX), "--config", str(daemon.config), "status", "--json"], env=daemon.environ,
                             capture_output=True, text=True, timeout=60)
        assert json.loads(own.stdout)["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    finally:
        daemon.stop()
