"""The indexing core under crashes and odd files: the real `pixdex index` process, killed with SIGKILL
at random moments, then resumed; catalog, vector file, text index, sidecars and disk must agree."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PIXDEX, Env, gradient, write_config
from consistency import check_consistent, temp_files
from PIL import Image


def tiny(rng: random.Random, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)


def make_tree(root: Path, rng: random.Random, count: int) -> list[Path]:
    files = []
    for n in range(count):
        path = root / f"album{n % 7}" / f"sub{n % 3}" / f"img_{n:04d}{'.jpg' if n % 2 else '.png'}"
        tiny(rng, path)
        files.append(path)
    return files


def mutate(root: Path, rng: random.Random) -> None:
    """Replacements, renames, a folder rename, deletes, duplicates and new files."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png"))
    rng.shuffle(files)
    n = max(1, len(files) // 10)
    for path in files[:n]:  # replaced: same name, new content
        tiny(rng, path)
    for path in files[n:2 * n]:  # renamed (and moved)
        target = root / "renamed" / f"r_{path.name}"
        target.parent.mkdir(exist_ok=True)
        path.rename(target)
        if path.with_name(path.name + ".xmp").exists():
            path.with_name(path.name + ".xmp").rename(target.with_name(target.name + ".xmp"))
    for path in files[2 * n:2 * n + n // 2]:  # deleted
        path.unlink()
    for path in files[3 * n:3 * n + n // 2]:  # duplicated
        shutil.copyfile(path, path.with_name("copy_" + path.name))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("album"))
    if folders:
        folders[0].rename(root / f"moved_{folders[0].name}_{rng.randrange(1000)}")
    for k in range(n):
        tiny(rng, root / "new" / f"new_{rng.randrange(10**9)}_{k}.png")


def run_index(env: Env, kill_after: float | None = None) -> subprocess.CompletedProcess[str] | None:
    proc = subprocess.Popen([str(PIXDEX), "--config", str(env.config), "index"], env=env.environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if kill_after is None:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    time.sleep(kill_after)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as systemd kills a unit's cgroup
    proc.communicate()
    return None


def crash_trials(env: Env, trials: int, count: int, seed: int) -> None:
    rng = random.Random(seed)
    make_tree(env.pics, rng, count)
    run_index(env)
    check_consistent(env.data, env.pics)
    for _ in range(trials):
        mutate(env.pics, rng)
        run_index(env, kill_after=rng.uniform(0.3, 3.0))
        if rng.random() < 0.5:
            mutate(env.pics, rng)  # the tree changes again before the resume
            run_index(env, kill_after=rng.uniform(0.3, 2.0))
        run_index(env)
        check_consistent(env.data, env.pics)


def fast_config(env: Env, model_dir: Path, extra: str = "") -> None:
    write_config(env.config, model_dir, [env.pics],
                 "[pipeline]\ncommit_items = 16\ncommit_seconds = 0.2\n[index]\nsave_changes = 40\n" + extra)


@pytest.mark.timeout(600)
def test_kill_9_at_random_moments_then_resume_keeps_every_store_in_step(env: Env, model_dir: Path) -> None:
    fast_config(env, model_dir)
    crash_trials(env, trials=3, count=120, seed=7)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_fourteen_trials_over_a_few_hundred_images(env: Env, model_dir: Path) -> None:
    fast_config(env, model_dir)  # with the 3 fast trials, the daemon's and the model switch's: 25 kills a run
    crash_trials(env, trials=14, count=240, seed=20)


def catalog(env: Env) -> sqlite3.Connection:
    return sqlite3.connect(env.data / "catalog.sqlite3")


def test_crash_during_reindex_of_replaced_files_does_not_leave_old_content_done(env: Env, model_dir: Path) -> None:
    """Regression: a replaced file used to become "done" with the new stat and the old content's data."""
    rng = random.Random(1)
    files = make_tree(env.pics, rng, 12)
    fast_config(env, model_dir)
    run_index(env)
    old = {row[0]: row[1] for row in catalog(env).execute("SELECT path, hash FROM images")}
    for path in files[:6]:
        tiny(rng, path)
    # Results wait 60 s for their commit: the kill lands after the scan queued the files, before any result.
    write_config(env.config, model_dir, [env.pics], "[pipeline]\ncommit_items = 100000\ncommit_seconds = 60\n")
    proc = subprocess.Popen([str(PIXDEX), "--config", str(env.config), "index"], env=env.environ,
                            start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while catalog(env).execute("SELECT count(*) FROM queue").fetchone()[0] < 6:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    db = catalog(env)
    for path in files[:6]:
        size, mtime, digest, state = db.execute("SELECT size, mtime_ns, hash, state FROM images WHERE path = ?",
                                                (os.fsencode(path),)).fetchone()
        assert digest == old[os.fsencode(path)] and state == "done"  # still the old content's, searchable …
        assert (size, mtime) != (path.stat().st_size, path.stat().st_mtime_ns)  # … but not claiming the new stat
    assert db.execute("SELECT count(*) FROM queue").fetchone()[0] == 6
    fast_config(env, model_dir)
    run_index(env)
    check_consistent(env.data, env.pics)


def done_count(env: Env) -> int:
    try:
        return int(catalog(env).execute("SELECT count(*) FROM images WHERE state = 'done'").fetchone()[0])
    except sqlite3.OperationalError:  # not created, or not migrated yet
        return 0


def test_an_image_moved_over_another_with_its_sidecar_keeps_that_sidecar(env: Env, model_dir: Path) -> None:
    """`mv a.png b.png; mv a.png.xmp b.png.xmp` (a file manager moving sidecars along): b's row ends, and the
    sidecar now at b.png.xmp is a's — the end of b must not delete it."""
    fast_config(env, model_dir)
    rng = random.Random(3)
    for name in ("a.png", "b.png"):
        tiny(rng, env.pics / name)
    run_index(env)
    assert (env.pics / "a.png.xmp").exists() and (env.pics / "b.png.xmp").exists()
    (env.pics / "a.png").rename(env.pics / "b.png")
    (env.pics / "a.png.xmp").rename(env.pics / "b.png.xmp")
    run_index(env)
    assert (env.pics / "b.png.xmp").exists()
    check_consistent(env.data, env.pics)


def test_failed_file_replaced_by_a_valid_image_is_indexed(env: Env, model_dir: Path) -> None:
    bad = env.pics / "later.png"
    bad.write_bytes(b"not yet an image")
    fast_config(env, model_dir)
    first = json.loads(env.run("index", "--json").stdout)
    assert first["failed"] == 1
    gradient(3).save(bad)
    second = json.loads(env.run("index", "--json").stdout)
    assert second["failed"] == 0 and second["embedded"] == 1
    assert catalog(env).execute("SELECT state, reason FROM images").fetchone() == ("done", None)


def test_interrupt_says_how_much_was_committed(env: Env, model_dir: Path) -> None:
    make_tree(env.pics, random.Random(2), 60)
    write_config(env.config, model_dir, [env.pics], "[pipeline]\ncommit_items = 4\ncommit_seconds = 0.1\n"
                 "[decode]\nworkers = 1\n")
    proc = subprocess.Popen([str(PIXDEX), "--config", str(env.config), "index"], env=env.environ,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while done_count(env) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    done = catalog(env).execute("SELECT count(*) FROM images WHERE state = 'done'").fetchone()[0]
    queued = catalog(env).execute("SELECT count(*) FROM queue").fetchone()[0]
    assert f"{done} image(s) were committed" in err
    assert done + queued == 60 and queued > 0
    run_index(env)
    check_consistent(env.data, env.pics)


def test_worker_that_dies_on_a_file_blames_that_file_and_the_rest_goes_on(env: Env, model_dir: Path) -> None:
    make_tree(env.pics, random.Random(3), 10)
    gradient(1).save(env.pics / "crashme.png")
    fast_config(env, model_dir)
    environ = dict(env.environ, PIXDEX_TEST_CRASH_ON="crashme")
    proc = subprocess.run([str(PIXDEX), "--config", str(env.config), "index", "--json"], env=environ,
                          capture_output=True, text=True, timeout=300)
    summary = json.loads(proc.stdout)
    assert summary["failed"] == 1 and summary["embedded"] == 10
    [(path, reason)] = summary["failures"]
    assert path.endswith("crashme.png") and "died" in reason and "SIGSEGV" in reason


def test_workers_run_at_lowered_cpu_and_io_priority_in_the_idle_class(env: Env, model_dir: Path) -> None:
    import psutil

    from pixdex.indexer.core import Indexer
    from pixdex.indexer.settings import load_config

    fast_config(env, model_dir)
    with Indexer(load_config(env.config, env.environ)) as indexer:
        indexer.scan([env.pics])
        indexer.drain()
        workers = [w for w in psutil.Process().children() if "resource_tracker" not in " ".join(w.cmdline())]
        assert len(workers) == 3  # the inference worker and two decoders
        deadline = time.monotonic() + 20  # a worker lowers itself as it starts (its initializer)
        while any(w.nice() < os.nice(0) + 10 or w.ionice().ioclass != psutil.IOPRIO_CLASS_IDLE
                  or os.sched_getscheduler(w.pid) != os.SCHED_IDLE for w in workers) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        for worker in workers:
            assert worker.nice() >= os.nice(0) + 10
            assert worker.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
            assert os.sched_getscheduler(worker.pid) == os.SCHED_IDLE  # CPU only when nothing else wants it


def test_temp_files_left_by_a_crash_are_removed_on_the_next_visit(env: Env, model_dir: Path) -> None:
    make_tree(env.pics, random.Random(4), 4)
    fast_config(env, model_dir)
    leftover = env.pics / "album0" / "sub0" / ".pixdex-tmp-999999999-dead"
    leftover.write_bytes(b"half a sidecar")
    alive = env.pics / "album0" / "sub0" / f".pixdex-tmp-{os.getpid()}-live"  # a live process's: kept
    alive.write_bytes(b"being written")
    run_index(env)
    assert not leftover.exists() and alive.exists()
    alive.unlink()
    assert temp_files(env.pics) == []


def test_a_file_rewritten_with_the_same_bytes_gets_its_missing_sidecar_back(env: Env, model_dir: Path) -> None:
    """Found by the kill trials: same content is not decoded again, but the sidecar must still be there."""
    files = make_tree(env.pics, random.Random(5), 4)
    fast_config(env, model_dir)
    run_index(env)
    image = files[0]
    sidecar = image.with_name(image.name + ".xmp")
    from pixdex.indexer.sidecars.read import read_sidecar

    kept = read_sidecar(sidecar)
    sidecar.unlink()
    image.write_bytes(image.read_bytes())  # same bytes, new mtime
    summary = json.loads(env.run("index", "--json").stdout)
    assert summary["decoded"] == 0 and summary["unchanged"] == 4
    again = read_sidecar(sidecar)
    assert again.pop("Xmp.xmp.MetadataDate") and kept.pop("Xmp.xmp.MetadataDate")
    assert again == kept
    check_consistent(env.data, env.pics)


@pytest.mark.parametrize("signum, delay", [(signal.SIGINT, 0.3), (signal.SIGINT, 1.5), (signal.SIGTERM, 1.0)])
def test_ctrl_c_or_kill_to_the_process_group_at_any_moment_is_quiet_and_quick(
        env: Env, model_dir: Path, signum: int, delay: float) -> None:
    """Ctrl-C reaches every process of the terminal's group, workers included (found by a new-user trial:
    workers starting up printed tracebacks and the run took 30 s to stop)."""
    make_tree(env.pics, random.Random(6), 80)
    fast_config(env, model_dir)
    proc = subprocess.Popen([str(PIXDEX), "--config", str(env.config), "index"], env=env.environ,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signum)
    start = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 15
    assert proc.returncode in (130, -signum) or "interrupted" in err
    for noise_ in ("Traceback", "Fatal Python error", "unexpected error", "BrokenProcessPool"):
        assert noise_ not in err, err
    assert err.count("pixdex: interrupted") <= 1
    run_index(env)
    check_consistent(env.data, env.pics)
    assert catalog(env).execute("SELECT count(*) FROM images WHERE state = 'failed'").fetchone()[0] == 0
