"""A reinstall under a running daemon (the README's test command beside its first one: `pip install -e`
removes the files `pip install .` put into site-packages): the daemon read every file it serves or
needs at start, so the web page, its static files, openapi.json and searches (with the vocabulary's
related tags) go on answering."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLIP_TAGS_OFF, REPO, noise
from served import Served, wait_for

pytestmark = pytest.mark.slow


def _installed_copy(site: Path) -> None:
    """pixdex installed as the README's first command installs it (`pip install .`, not editable: the package list
    and package data in pyproject.toml decide what lands), into `site`."""
    source = site.parent / "source"  # a clean copy: setuptools would also pack what an earlier build left in build/
    for name in ("daemon", "indexer", "query"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(source)], check=True, timeout=300)


def _sources(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_pip_install_dot_installs_every_module_and_data_file(tmp_path: Path) -> None:
    """A package folder left out of pyproject.toml's list is missing from a real install only (the tests run an
    editable one): `pixdex serve` then fails to import it."""
    site = tmp_path / "site"
    _installed_copy(site)
    for folder in ("daemon", "indexer", "query"):
        missing = _sources(REPO / folder) - _sources(site / "pixdex" / folder)
        assert not missing, f"pip install . leaves out of pixdex/{folder}: {sorted(missing)}"
    done = subprocess.run([sys.executable, "-c", "from pixdex.daemon.cli import main; raise SystemExit(main())",
                           "--help"], env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "serve" in done.stdout, done.stderr[-2000:]


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
