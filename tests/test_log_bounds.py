"""A log no one can fill: every record bounded in length and in count, whatever logged it (a library, a
warning, a thread's uncaught exception). Found by a trial: each folder inotify could not watch (chmod 000 in a
watched tree) made watchdog warn with the map of every watched folder in the text; watching "/" gave a 2 GB
log with a line of 11.8 million characters."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import noise
from served import Served, wait_for
from test_drift import without_root_capabilities

from pixdex.daemon.logs import BURST, MESSAGE_CHARS, TRACE_CHARS

RECORD_CHARS = MESSAGE_CHARS + TRACE_CHARS + 200  # a record's text at most (its message, its traceback, markers)

NOISY = """
import logging, threading, warnings
from pixdex.daemon.logs import setup_logging
setup_logging(0)
logging.getLogger("some.library").warning("%s", "x" * 2**20)
try:
    raise ValueError("y" * 2**20)
except ValueError:
    logging.getLogger("another.library").exception("it failed")
for n in range(50):  # one place, 50 different texts of 1 MB
    warnings.warn(f"{n} " + "z" * 2**20, RuntimeWarning)
def crash():
    raise RuntimeError("w" * 2**20)
thread = threading.Thread(target=crash, name="crasher")
thread.start()
thread.join()
logging.getLogger("some.library").warning("the end")
"""


def test_a_record_of_any_logger_a_warning_or_a_thread_is_bounded_in_length_and_count() -> None:
    done = subprocess.run([sys.executable, "-c", NOISY], capture_output=True, text=True, timeout=60, check=True)
    err = done.stderr
    lines = err.splitlines()
    assert max(len(line) for line in lines) < RECORD_CHARS, max(len(line) for line in lines)
    assert len(err) < 30 * RECORD_CHARS  # 4 records and BURST warnings, 5 MB logged
    assert lines[0].endswith(" chars cut) ") and "some.library: xxx" in lines[0]
    assert max(len(line) for line in lines if "some.library" in line) < MESSAGE_CHARS + 40
    assert "ValueError: yyy" in err and err.count("Traceback (most recent call last)") == 2
    assert "thread crasher stopped on an uncaught exception: RuntimeError" in err
    assert sum("RuntimeWarning: " in line for line in lines) == BURST  # the rest held back, counted later
    assert lines[-1].endswith("some.library: the end")


@pytest.mark.slow
def test_unreadable_folders_in_a_big_tree_leave_a_small_log(tmp_path: Path, model_dir: Path) -> None:
    """200 folders, 5 of mode 000, the daemon without root's capabilities; then a folder with 3 more unreadable
    ones moved in (watchdog walks it to watch it) and several full rescans: no watchdog warning, every line
    short, each unreadable folder logged once and listed in status."""
    pics = tmp_path / "pics"
    for n in range(200):
        (pics / f"folder-with-a-longish-name-{n:03}").mkdir(parents=True)
    noise(1).save(pics / "folder-with-a-longish-name-000" / "a.png")
    locked = [pics / f"folder-with-a-longish-name-{n:03}" for n in range(10, 15)]
    late = tmp_path / "late"
    late_locked = [late / f"locked-{n}" for n in range(3)]
    for folder in late_locked:
        folder.mkdir(parents=True)
    for folder in locked + late_locked:
        folder.chmod(0o000)
    daemon = Served(tmp_path, model_dir, [pics])
    daemon.config.write_text(daemon.config.read_text().replace("reconcile = 0\n", "reconcile = 2\n"))
    without_root_capabilities(daemon)
    daemon.start()
    try:
        wait_for(lambda: daemon.idle() and len(daemon.listed()) == 1, timeout=60, what="indexing")
        os.rename(late, pics / "late")
        wait_for(lambda: len(daemon.status()["unreadable_folders"]) == 8, timeout=30, what="the 8 folders in status")
        wait_for(lambda: daemon.log.read_text().count("reconciling 1 folder(s)") >= 4, timeout=30,
                 what="a few full rescans")
        time.sleep(1)
        status = daemon.status()
    finally:
        daemon.stop()
        for folder in [*locked, *late_locked, *(pics / "late" / f.name for f in late_locked)]:
            if folder.exists():
                folder.chmod(0o755)
    log = daemon.log.read_text()
    lines = log.splitlines()
    assert max(len(line) for line in lines) < MESSAGE_CHARS + 200, max(len(line) for line in lines)
    assert len(log) < 20_000, len(log)
    assert "RuntimeWarning" not in log and "already exists for watch" not in log
    expected = {str(f) for f in locked} | {str(pics / "late" / f.name) for f in late_locked}
    assert {u["path"] for u in status["unreadable_folders"]} == expected
    for path in expected:  # logged once each, not at every rescan
        assert sum(f" {path}: cannot list folder" in line for line in lines) == 1, path
