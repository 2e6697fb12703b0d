"""Odd files a new user has: dates out of range, names near the length limit, FIFOs, symlink loops.
Each was found stopping or hanging every run; each must be one file's problem at most."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import PIXDEX, Env, exif_bytes, gradient, make_library, solid


def rows(env: Env) -> dict[str, tuple[str, str | None, str | None]]:
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    rows = db.execute("SELECT path, state, reason, sidecar_error FROM images")
    out = {os.fsdecode(p): (s, r, e) for p, s, r, e in rows}
    db.close()
    return out


def test_dates_outside_what_the_indexes_hold_are_dropped_and_the_file_indexed(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    future = env.pics / "future_exif.jpg"
    gradient(1).save(future, exif=exif_bytes(("Canon", "Canon EOS 5D"), "2300:01:01 00:00:00"))
    past = env.pics / "past_exif.jpg"
    gradient(2).save(past, exif=exif_bytes(("Canon", "Canon EOS 5D"), "1600:01:01 00:00:00"))
    far_mtime = env.pics / "far_mtime.png"
    solid((1, 2, 3)).save(far_mtime)
    os.utime(far_mtime, ns=(0, 10_413_792_000 * 10**9))  # year 2300: past int64 nanoseconds
    old_mtime = env.pics / "old_mtime.png"
    solid((4, 5, 6)).save(old_mtime)
    os.utime(old_mtime, ns=(0, -11_676_096_000 * 10**9))  # year 1600
    summary = env.index_json(capsys)
    assert summary["new"] == 4 and summary["failed"] == 0, summary
    assert {state for state, _, _ in rows(env).values()} == {"done"}
    again = env.index_json(capsys)  # and the clamped stat does not make them look changed
    assert again["unchanged"] == 4 and again["decoded"] == 0
    _status, out, _ = env.cli("search", "camera:canon", "--json", capsys=capsys)
    assert {Path(h["path"]).name for h in json.loads(out)["hits"]} == {"future_exif.jpg", "past_exif.jpg"}


def test_renaming_an_indexed_file_to_a_name_near_the_limit_is_that_files_problem(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    make_library(env.pics)
    env.index_json(capsys)
    old = env.pics / "holiday" / "harbour_boats.jpg"
    long = old.with_name("b" * 251 + ".jpg")  # 255 bytes: the sidecar's name would be 259
    old.rename(long)
    summary = env.index_json(capsys)
    assert summary["moved"] == 1 and summary["failed"] == 0
    [error] = summary["sidecar_errors"]
    assert "name too long" in error.lower()
    again = env.index_json(capsys)
    assert again["unchanged"] == 9
    status, _out, _ = env.cli("search", "b" * 20, "--json", capsys=capsys)  # still searchable
    assert status == 0


def test_a_new_file_with_a_name_at_the_limit_is_indexed_and_its_sidecar_failure_recorded(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    long = env.pics / ("c" * 251 + ".png")
    gradient(3).save(long)
    summary = env.index_json(capsys)
    assert summary["new"] == 1 and summary["failed"] == 0
    state, _, sidecar_error = rows(env)[str(long)]
    assert state == "done" and "too long" in (sidecar_error or "").lower()
    assert [p.name for p in env.pics.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


def test_fifo_is_refused_at_once_by_similar_and_skipped_by_the_scan(env: Env, capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    make_library(env.pics)
    os.mkfifo(env.pics / "pipe.jpg")
    summary = env.index_json(capsys)  # would hang on open() if it read the FIFO
    assert summary["new"] == 9 and summary["failed"] == 0
    proc = env.run("similar", str(env.pics / "pipe.jpg"), check=False, timeout=30)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def test_symlink_loops_do_not_multiply_the_tree(env: Env) -> None:
    make_library(env.pics)
    (env.pics / "holiday" / "up").symlink_to("..")  # a link to an ancestor
    (env.pics / "garden" / "a").symlink_to(env.pics / "city")
    (env.pics / "city" / "b").symlink_to(env.pics / "garden")  # two links that point at each other
    env.config.write_text(env.config.read_text().replace("[library]\n", "[library]\nfollow_symlinks = true\n"))
    proc = env.run("index", "--json", timeout=120)
    summary = json.loads(proc.stdout)
    assert summary["new"] == 9 and summary["failed"] == 0
    assert summary["folder_errors"] == []  # links into the library are not followed: nothing to loop over
    assert len(rows(env)) == 9


def test_any_oserror_about_one_file_is_that_files_failure(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    make_library(env.pics)
    unreadable = env.pics / "locked.png"
    gradient(4).save(unreadable)
    unreadable.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: a folder in its place gives a per-file error too
        unreadable.chmod(0o644)
        pytest.skip("root reads files whatever their mode")
    summary = env.index_json(capsys)
    assert summary["failed"] == 1 and "Permission denied" in summary["failures"][0][1]


def test_many_runs_in_processes_do_not_leak_workers(env: Env) -> None:
    make_library(env.pics)
    for _ in range(2):
        env.run("index")
    proc = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True)
    ours = [pid for pid in proc.stdout.split() if str(env.root) in _cmdline(pid)]
    assert ours == []
    assert PIXDEX.exists()


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_links_into_the_library_never_index_a_file_twice(env: Env, capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    make_library(env.pics)
    env.config.write_text(env.config.read_text().replace("[library]\n", "[library]\nfollow_symlinks = true\n"))
    (env.pics / "garden" / "up").symlink_to("..")  # a link to the root from inside
    alias = tmp_path / "alias"
    alias.symlink_to(env.pics / "holiday")  # a root given through a link
    outside = tmp_path / "outside"
    outside.mkdir()
    gradient(7).save(outside / "elsewhere.png")
    (env.pics / "linked").symlink_to(outside)  # a link out of the library: followed
    (outside / "back").symlink_to(outside)  # … and a loop out there: entered once
    first = env.index_json(capsys)
    assert first["new"] == 10
    assert [reason for _, reason in first["folder_errors"]] == [
        "already scanned under another path (a symlink loop or a second link); skipped"]
    sub = env.index_json(capsys, env.pics / "garden")  # a root below a link to its ancestor
    assert sub["new"] == 0 and sub["unchanged"] == 3
    again = env.index_json(capsys, alias)
    assert again["new"] == 0 and again["unchanged"] == 3 and again["embedded"] == 0
    assert len(rows(env)) == 10
    assert str(env.pics / "linked" / "elsewhere.png") in rows(env)


def test_a_root_that_is_a_link_keeps_its_rows_when_paths_become_resolved(env: Env, capsys: pytest.CaptureFixture[str],
                                                                         tmp_path: Path) -> None:
    """Rows stored under the link's path (as pixdex 0.1 stored them) are moved, not indexed again."""
    real = tmp_path / "real"
    env.pics.rename(real)
    env.pics.symlink_to(real)
    make_library(real)
    env.index_json(capsys)
    db = sqlite3.connect(env.data / "catalog.sqlite3")
    db.execute("UPDATE images SET path = replace(CAST(path AS TEXT), ?, ?)", (str(real), str(env.pics)))
    db.execute("UPDATE images SET path = CAST(path AS BLOB)")
    db.commit()
    summary = env.index_json(capsys)
    assert (summary["moved"], summary["new"], summary["embedded"]) == (9, 0, 0)
    assert all(p.startswith(str(real)) for p in rows(env))


def test_a_file_over_the_size_limit_is_refused_unread_and_the_run_goes_on(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a trial: a 10 GB file named .jpg was read whole into memory. Now its size is checked before
    reading (a sparse 4 GiB file: nothing on disk, and nothing read), and a file that is over the configured
    `decode.max_megabytes` is refused with a reason that says which setting to raise."""
    make_library(env.pics)
    huge = env.pics / "huge.jpg"
    with open(huge, "wb") as handle:
        handle.truncate(4 << 30)
    summary = env.index_json(capsys)
    assert summary["new"] == 10 and summary["failed"] == 1, summary
    state, reason, _ = rows(env)[str(huge)]
    assert state == "failed" and reason is not None and "4,096 MB, more than decode.max_megabytes (1,024)" in reason
    assert "raise it" in reason
    big = env.pics / "big_noise.png"
    gradient(7).resize((1400, 1400)).save(big, compress_level=0)  # ~5.9 MB
    env.config.write_text(env.config.read_text() + "\n[decode]\nmax_megabytes = 2\n")
    env.index_json(capsys)
    assert "more than decode.max_megabytes (2)" in str(rows(env)[str(big)][1])
    assert {state for path, (state, _, _) in rows(env).items() if path not in (str(huge), str(big))} == {"done"}
