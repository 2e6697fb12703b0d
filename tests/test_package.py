"""The installed package: import names live under one `pixdex` namespace, and a built wheel
imports on its own, away from the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

MODULES = ["pixdex.daemon.cli", "pixdex.indexer.settings", "pixdex.indexer.core", "pixdex.indexer.prepare",
           "pixdex.indexer.inference", "pixdex.indexer.pipeline", "pixdex.indexer.sidecars.merge",
           "pixdex.indexer.sidecars.tasks", "pixdex.query.reader", "pixdex.query.service"]


def test_installed_package_imports_outside_the_checkout(tmp_path: Path) -> None:
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; print('ok')"
    out = subprocess.run([sys.executable, "-c", code, *MODULES], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    leaked = subprocess.run([sys.executable, "-c", "import indexer"], cwd=tmp_path, capture_output=True, text=True)
    assert leaked.returncode != 0  # no top-level `indexer`, `daemon` or `query` is installed


@pytest.mark.slow
def test_wheel_contains_the_namespace_and_imports_alone(tmp_path: Path) -> None:
    source = tmp_path / "src"  # build from a copy: setuptools leaves build/ in the tree it builds
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=False).stdout
    if tracked:  # what a clone holds: not bench/out, test artifacts or a venv
        for name in tracked.decode().split("\0"):
            if name and (REPO / name).is_file():
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, source / name)
    else:
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "out"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    if built.returncode != 0 and "setuptools" in built.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("pixdex-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pixdex/daemon/cli.py" in names and "pixdex/indexer/pipeline.py" in names
    assert "pixdex/query/service.py" in names
    assert not any(n.startswith(("daemon/", "indexer/", "query/", "tests/")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import sys, pixdex.indexer.pipeline as p, pixdex.daemon.cli as c; "
            "assert p.__file__.startswith(sys.argv[1]), p.__file__; print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_indexer_and_query_never_import_the_daemon() -> None:
    """Layering: the daemon builds on the core, never the other way round."""
    import ast

    offenders = []
    for folder in ("indexer", "query"):
        for source in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{source.relative_to(REPO)}: {n}" for n in names if n.startswith("pixdex.daemon")]
    assert offenders == []


def test_the_data_directory_layout_is_known_in_one_place() -> None:
    """Only indexer/layout.py names the store files in code; everyone else asks a Layout."""
    import ast

    names = ("catalog.sqlite3", "vectors.usearch", "vectors.json", "index.lock", "fulltext", "pixdex.json")
    found = []
    for folder in ("indexer", "query", "daemon"):
        for source in sorted((REPO / folder).rglob("*.py")):
            if source.name == "layout.py":
                continue
            tree = ast.parse(source.read_text())
            docs = {id(n.body[0].value) for n in ast.walk(tree)
                    if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef) and n.body
                    and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
            found += [f"{source.relative_to(REPO)}: {node.value}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                      and node.value in names]
    assert found == []
