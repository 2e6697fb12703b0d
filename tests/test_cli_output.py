"""What the command line prints, for people and for pipes: one-line errors, raw bytes with -0, escaped
names, quiet broken pipes, light imports for the commands that need no model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PIXDEX, Env, gradient, make_library


@pytest.fixture()
def indexed(env: Env, capsys: pytest.CaptureFixture[str]) -> Env:
    make_library(env.pics)
    env.index_json(capsys)
    return env


@pytest.mark.parametrize("query", ["after:9999-12-31", "before:0001-01-01", "before:1000", "tram after:0001",
                                   "tram before:9999"])
def test_dates_beyond_the_index_range_are_answered_not_a_traceback(indexed: Env, capsys: pytest.CaptureFixture[str],
                                                                   query: str) -> None:
    status, out, err = indexed.cli("search", query, "--json", capsys=capsys)
    assert status in (0, 1) and "Traceback" not in err
    names = {Path(h["path"]).name for h in json.loads(out)["hits"]}
    if query.startswith("tram"):  # a bound that excludes nothing
        assert "old_tram.bmp" in names
    else:  # nothing lies after 9999 or before year 1000
        assert names == set()


def test_negative_k_gets_the_same_message_as_zero(indexed: Env, capsys: pytest.CaptureFixture[str]) -> None:
    for k in ("-1", "0"):
        status, _, err = indexed.cli("search", "tram", "-k", k, capsys=capsys)
        assert status == 2 and err.strip() == f"pixdex: error: k = {k} is out of range; use a number from 1 to 10000"


def test_unknown_filters_are_said_to_be_searched_as_words(indexed: Env, capsys: pytest.CaptureFixture[str]) -> None:
    _status, out, err = indexed.cli("search", "tram stars:3 mood:x", "--json", capsys=capsys)
    notes = json.loads(out)["notes"]
    assert any(n.startswith("stars:3: not a filter pixdex knows") for n in notes)
    assert any(n.startswith("mood:x: not a filter") for n in notes)
    assert "note: stars:3" in err


def test_null_output_is_the_raw_bytes_of_names(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    raw = os.path.join(os.fsencode(env.pics), b"caf\xe9 latin1.png")
    with open(raw, "wb") as handle:
        gradient(1).save(handle, format="PNG")
    newline = env.pics / "two\nlines.png"
    gradient(2).save(newline)
    env.run("index")
    proc = subprocess.run([str(PIXDEX), "--config", str(env.config), "search", "ext:png", "-0"], env=env.environ,
                          capture_output=True)
    assert sorted(proc.stdout.split(b"\0")[:-1]) == sorted([raw, os.fsencode(newline)])
    listed = subprocess.run(["xargs", "-0", "ls", "-d"], input=proc.stdout, capture_output=True)
    assert listed.returncode == 0  # xargs -0 finds every file
    plain = env.run("search", "ext:png").stdout
    assert len(plain.splitlines()) == 2 and "two\\nlines.png" in plain  # one line per hit, the newline escaped


def test_closed_pipe_is_not_a_traceback(indexed: Env) -> None:
    proc = subprocess.run(f"'{PIXDEX}' --config '{indexed.config}' status | head -1", shell=True,
                          env=indexed.environ, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("images:") and "Traceback" not in proc.stderr
    proc = subprocess.run(f"'{PIXDEX}' --config '{indexed.config}' search tram -k 9 | head -1", shell=True,
                          env=indexed.environ, capture_output=True, text=True)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def imported_by(args: list[str], env: Env) -> set[str]:
    code = ("import sys; from pixdex.daemon import cli; status = cli.main(sys.argv[1:]); "
            "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, "--config", str(env.config), *args], env=env.environ,
                          capture_output=True, text=True)
    return set(proc.stderr.split("\n"))


def test_status_and_failures_load_no_model_runtime_index_or_image_library(indexed: Env) -> None:
    heavy = {"onnxruntime", "usearch", "usearch.index", "PIL", "tantivy", "pyexiv2", "torch", "numpy", "tqdm"}
    for command in (["status"], ["failures"]):
        assert imported_by(command, indexed) & heavy == set()


def test_search_loads_no_image_library_or_exporter(indexed: Env) -> None:
    modules = imported_by(["search", "tram"], indexed)
    assert "onnxruntime" in modules  # the query's text tower
    assert modules & {"PIL", "pyexiv2", "torch", "open_clip", "pebble"} == set()


def test_a_query_may_start_with_a_minus_and_need_no_quotes(indexed: Env, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = indexed.cli("search", "-ext:png", "-k", "50", "--json", capsys=capsys)
    assert status == 0, err
    assert {Path(h["path"]).suffix for h in json.loads(out)["hits"]} == {".jpg", ".webp", ".gif", ".bmp", ".tiff"}
    status, out, _ = indexed.cli("search", "old", "tram", "-k", "1", capsys=capsys)
    assert status == 0 and "old_tram.bmp" in out
    status, out, _ = indexed.cli("search", "-k", "2", "--", "-ext:png", "tram", capsys=capsys)
    assert status == 0 and len(out.splitlines()) == 2


def test_k_above_the_candidate_count_is_honoured(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    for n in range(12):
        gradient(n).save(env.pics / f"g{n}.png")
    env.config.write_text(env.config.read_text() + "[search]\ncandidates = 10\n")
    env.index_json(capsys)
    _status, out, _ = env.cli("search", "anything", "-k", "12", "--json", capsys=capsys)
    assert len(json.loads(out)["hits"]) == 12


def test_status_names_the_config_file_in_use(indexed: Env, capsys: pytest.CaptureFixture[str]) -> None:
    _status, out, _ = indexed.cli("status", "--json", capsys=capsys)
    assert json.loads(out)["paths"]["config"] == str(indexed.config)


def test_index_summary_counts_resumed_work_and_unwritten_sidecars(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    make_library(env.pics)
    gradient(9).save(env.pics / ("d" * 251 + ".png"))  # its sidecar's name would be too long
    first = env.index_json(capsys)
    assert first["sidecar_failures"] == 1 and "too long" in first["sidecar_errors"][0].lower()
    db = sqlite3.connect(env.data / "catalog.sqlite3")  # as a crash leaves it: work queued, not done
    db.execute("INSERT INTO queue SELECT id, 1, 'left by a crash', 1000 + rowid, 0 FROM images LIMIT 3")
    db.commit()
    status, out, _err = env.cli("index", capsys=capsys)
    assert status == 0 and "3 resumed from an earlier run" in out
