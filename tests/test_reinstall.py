"""A reinstall under a running daemon (the README's test command beside its first one: `pip install -e`
removes the files `pip install .` put into site-packages): the daemon read every file it serves or
needs at start, so the web page, its static files, openapi.json and searches (with the vocabulary's
related tags) go on answering."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import CLIP_TAGS_OFF, REPO, noise
from served import Served, wait_for

pytestmark = pytest.mark.slow


def _installed_copy(site: Path) -> None:
    """pixdex as `pip install .` lays it out: pixdex/daemon, pixdex/indexer, pixdex/query with their data."""
    for folder in ("daemon", "indexer", "query"):
        shutil.copytree(REPO / folder, site / "pixdex" / folder, ignore=shutil.ignore_patterns("__pycache__"))


def test_files_removed_under_a_running_daemon_do_not_break_it(tmp_path: Path, model_dir: Path) -> None:
    site = tmp_path / "site"
    _installed_copy(site)
    pics = tmp_path / "pics"
    pics.mkdir()
    for n in range(3):
        noise(n).save(pics / f"photo{n}.png")
    daemon = Served(tmp_path, model_dir, [pics])
    daemon.config.write_text(daemon.config.read_text().replace(CLIP_TAGS_OFF, "[clip_tags]\nenabled = true\n"))
    daemon.environ["PYTHONPATH"] = str(site)
    daemon.command = [sys.executable, "-c", "from pixdex.daemon.cli import main; raise SystemExit(main())"]
    daemon.start()
    try:
        wait_for(lambda: daemon.idle() and len(daemon.listed(pics)) == 3, timeout=60, what="indexing")
        health = daemon.get("/health")
        assert health["ok"]
        # The reinstall: the installed copy's data files go (and the modules, which are loaded already).
        shutil.rmtree(site / "pixdex" / "daemon" / "web")
        (site / "pixdex" / "daemon" / "openapi.json").unlink()
        (site / "pixdex" / "indexer" / "vocabulary.txt").unlink()
        for path in ("/", "/static/app.js", "/static/app.css", "/openapi.json"):
            status, body = daemon.raw("GET", path, {"Host": "localhost"})
            assert status == 200 and body, (path, status, body)
        results = daemon.get("/search", q="photo", k=5)
        assert len(results["hits"]) == 3
    finally:
        daemon.stop()
