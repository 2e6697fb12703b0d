"""The daemon's life: systemd notifications, restart and kill -9 recovery, a crashing decoder, a
second daemon, a stale socket, SIGHUP reloads, reduced mode until models appear, forced polling."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PIXDEX, noise
from consistency import check_consistent
from served import Served, wait_for


@pytest.fixture(autouse=True)
def _no_daemon_left() -> Iterator[None]:
    yield
    Served.stop_all()


def tree(root: Path, count: int, seed: int = 0) -> None:
    for n in range(count):
        path = root / f"album{n % 5}" / f"img_{seed}_{n:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        noise(seed * 10_000 + n, (32, 24)).save(path)


def test_notify_ready_status_watchdog_stopping_and_journal_levels(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 3)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    listener.bind(address)
    listener.settimeout(30)
    daemon = Served(tmp_path, model_dir, [pics])
    daemon.environ.update(NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000", JOURNAL_STREAM="8:1234")
    daemon.start(wait=False)
    daemon.environ["WATCHDOG_PID"] = ""
    messages: list[str] = []
    try:
        while not any("READY=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert daemon.socket_path.exists()  # READY only once the socket listens
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)
        daemon.stop()
        listener.settimeout(1)
        try:
            while True:
                messages.append(listener.recv(4096).decode())
        except TimeoutError:
            pass
    finally:
        listener.close()
    assert any("STOPPING=1" in m for m in messages)
    log = daemon.log.read_text()
    assert "<6>pixdex.daemon.server: pixdex serving on" in log and "Traceback" not in log
    assert not daemon.socket_path.exists()  # removed on the way out


def test_restart_keeps_everything_and_a_second_daemon_refuses(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 12)
    daemon = Served(tmp_path, model_dir, [pics]).start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 12, timeout=60, what="the first index")
    before = daemon.listed()
    second = Served(tmp_path, model_dir, [pics])
    second.port = daemon.port + 1 if daemon.port < 65000 else daemon.port - 1
    second.write_config()
    second.start(wait=False)
    assert second.proc is not None and second.proc.wait(60) == 2
    assert f"already being indexed by pid {daemon.proc.pid}" in second.log.read_text()  # type: ignore[union-attr]
    assert daemon.get("/health")["ok"]  # its socket was not touched
    daemon.stop()
    daemon.start()
    assert daemon.listed() == before
    assert daemon.status()["progress"]["committed"] == 0  # nothing redone
    daemon.stop()


def test_a_stale_socket_from_a_crash_is_replaced(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 2)
    daemon = Served(tmp_path, model_dir, [pics]).start()
    daemon.kill9()
    assert daemon.socket_path.exists()  # left behind
    daemon.start()
    assert daemon.get("/health")["ok"]
    daemon.stop()


def test_sigusr1_writes_every_threads_stack_of_both_processes_to_the_log_and_serving_goes_on(
        tmp_path: Path, model_dir: Path) -> None:
    """How a person finds where a hung daemon waits: `systemctl --user kill -s USR1 pixdex`."""
    pics = tmp_path / "pics"
    tree(pics, 2)
    daemon = Served(tmp_path, model_dir, [pics]).start()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: " in cmd_serve" in daemon.log.read_text() and " in core_main" in daemon.log.read_text(),
             timeout=10, what="the serving and the indexing process's stacks in the log")
    log = daemon.log.read_text()
    assert "SIGUSR1: the stacks of every thread follow" in log and log.count("Current thread") == 2
    assert daemon.get("/health")["ok"]
    assert daemon.stop() == 0


@pytest.mark.slow
def test_kill_9_while_indexing_then_restart_agrees_and_resumes(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 150)
    rng = random.Random(3)
    daemon = Served(tmp_path, model_dir, [pics])
    for trial in range(4):
        daemon.start()
        time.sleep(rng.uniform(0.2, 2.5))
        if trial == 2:  # files change while it is down
            tree(pics, 20, seed=trial + 1)
            for path in sorted(pics.rglob("*.png"))[:5]:
                path.unlink()
        daemon.kill9()
    daemon.start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == sum(1 for _ in pics.rglob("*.png")), timeout=180,
             what="the resumed queue to drain")
    daemon.stop()
    check_consistent(daemon.data, pics)


def test_a_decoder_that_dies_on_a_file_is_replaced_and_the_file_recorded(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 4)
    noise(9).save(pics / "crashme.png")
    daemon = Served(tmp_path, model_dir, [pics])
    daemon.environ["PIXDEX_TEST_CRASH_ON"] = "crashme"
    daemon.start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 4, timeout=60, what="the good files")
    failures = daemon.get("/failures")
    assert [Path(f["path"]).name for f in failures] == ["crashme.png"]
    assert "SIGSEGV" in failures[0]["reason"]
    noise(10).save(pics / "after_crash.png")
    wait_for(lambda: str(pics / "after_crash.png") in daemon.listed(), what="a file after the crash")
    daemon.stop()


def test_sighup_adds_and_removes_folders_and_refuses_a_bad_config(tmp_path: Path, model_dir: Path) -> None:
    pics, more = tmp_path / "pics", tmp_path / "more"
    tree(pics, 3)
    tree(more, 2, seed=5)
    daemon = Served(tmp_path, model_dir, [pics]).start()
    wait_for(lambda: len(daemon.listed()) == 3, what="the first folder")
    daemon.folders = [pics, more]
    daemon.write_config()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(daemon.listed(more)) == 2, what="the added folder")
    assert [r["mode"] for r in daemon.status()["watch"]] == ["inotify", "inotify"]

    good = daemon.config.read_text()
    daemon.config.write_text(good + "\n[search]\nk = -5\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded" in daemon.log.read_text(), what="the refusal in the log")
    assert "search.k = -5" in daemon.log.read_text()
    assert daemon.get("/health")["ok"] and len(daemon.listed(more)) == 2  # the old config stays

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PIXDEX), "--config", str(daemon.config), *args], env=daemon.environ,
                              capture_output=True, text=True, timeout=60)

    for asked in (cli("search", f"folder:{more}", "-k", "2"), cli("status")):  # they still ask the daemon, and say why
        assert asked.returncode == 0 and asked.stdout, asked.stderr
        assert "warning: " in asked.stderr and "search.k = -5" in asked.stderr and "left at its default" in asked.stderr
    assert len(cli("search", f"folder:{more}", "-k", "2").stdout.splitlines()) == 2
    refused = cli("reload")
    assert refused.returncode == 2 and "search.k = -5" in refused.stderr  # a command that changes things: no

    daemon.folders = [more]
    daemon.write_config()
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not daemon.listed(pics), what="the removed folder to leave the index")
    assert len(daemon.listed(more)) == 2
    daemon.stop()


@pytest.mark.slow
def test_reduced_mode_without_models_then_models_appear(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 6)
    models = tmp_path / "models-later"
    daemon = Served(tmp_path, models, [pics]).start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 6, timeout=60, what="names and metadata")
    status = daemon.status()
    assert status["daemon"]["mode"] == "reduced" and status["waiting_for_models"] == 6
    assert "pixdex models" in status["daemon"]["fix"] and str(models) in status["daemon"]["missing"]
    results = daemon.get("/search", q="img", k=10)
    assert any("text results only" in n for n in results["notes"])
    outside = tmp_path / "outside.png"
    noise(3).save(outside)
    asked = [("similar", str(sorted(pics.rglob("*.png"))[0])), ("similar", str(outside)),
             ("similar", str(tmp_path / "nope.png"))]
    copy = tmp_path / "copy"
    shutil.copytree(daemon.data, copy / "data" / "pixdex")
    alone = {**daemon.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run-none"), "XDG_DATA_HOME": str(copy / "data")}
    for args in asked:  # the same answer through the daemon and without one
        through, direct = (subprocess.run([str(PIXDEX), "--config", str(daemon.config), *args], env=environ,
                                          capture_output=True, text=True, timeout=60)
                           for environ in (daemon.environ, alone))
        assert through.returncode == direct.returncode == 2 and through.stderr == direct.stderr, (through, direct)
    assert "cannot read query image" in direct.stderr and "nope.png" in direct.stderr
    shutil.copytree(model_dir, models)  # the models are installed while it runs
    wait_for(lambda: daemon.status()["daemon"]["mode"] == "full", timeout=30, what="full mode")
    wait_for(lambda: daemon.idle() and daemon.status()["waiting_for_models"] == 0, timeout=60,
             what="the waiting images to be embedded")
    assert not any("text results only" in n for n in daemon.get("/search", q="img", k=10)["notes"])
    daemon.stop()
    check_consistent(daemon.data, pics)


def test_polling_forced_on_a_root_still_sees_changes(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 2)
    daemon = Served(tmp_path, model_dir, [pics])
    daemon.watch_extra = f'poll = ["{pics}"]\npoll_interval = 1\n'
    daemon.write_config()
    daemon.start()
    watch = daemon.status()["watch"]
    assert watch[0]["mode"] == "polling" and "watch.poll" in watch[0]["why"]
    noise(33).save(pics / "polled.png")
    wait_for(lambda: str(pics / "polled.png") in daemon.listed(), timeout=20, what="a change seen by polling")
    os.unlink(pics / "polled.png")
    wait_for(lambda: str(pics / "polled.png") not in daemon.listed(), timeout=20, what="a delete seen by polling")
    daemon.stop()


def test_socket_activation_serves_on_the_socket_systemd_passes(tmp_path: Path, model_dir: Path) -> None:
    """As pixdex.socket does: systemd binds the socket and passes it as fd 3 (LISTEN_FDS, LISTEN_PID)."""
    import subprocess
    import sys

    pics = tmp_path / "pics"
    tree(pics, 1)
    daemon = Served(tmp_path, model_dir, [pics])
    daemon.socket_path.parent.mkdir(parents=True, mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(daemon.socket_path))
    listener.listen(16)
    exec_with_fd3 = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_FDS'] = '1'; "
                     "os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[2], sys.argv[2:])")
    from conftest import PIXDEX

    with open(daemon.log, "ab") as log:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-c", exec_with_fd3, str(listener.fileno()), str(PIXDEX), "--config", str(daemon.config),
             "serve"], env=daemon.environ, stdout=log, stderr=subprocess.STDOUT, pass_fds=[listener.fileno()],
            start_new_session=True)
    Served.started.append(daemon)
    listener.close()
    daemon.wait_ready()
    assert daemon.get("/health")["ok"]
    daemon.stop()
    assert daemon.socket_path.exists()  # systemd's socket is systemd's to remove


def test_pause_survives_a_restart_and_a_slow_client_stalls_nobody(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 2)
    daemon = Served(tmp_path, model_dir, [pics]).start()
    daemon.post("/pause")
    daemon.stop()
    daemon.start()
    assert daemon.status()["daemon"]["paused"] is True
    noise(5).save(pics / "while_paused.png")
    time.sleep(1.5)
    assert str(pics / "while_paused.png") not in daemon.listed()
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # sends half a request and waits
    slow.connect(str(daemon.socket_path))
    slow.sendall(b"GET /search?q=x HTTP/1.1\r\nHost: local")
    try:
        started = time.monotonic()
        assert daemon.get("/health")["ok"]
        assert time.monotonic() - started < 5
    finally:
        slow.close()
    # Queued while paused, then a restart: the new process starts paused before it feeds anything.
    wait_for(lambda: sum(daemon.status()["counts"].values()) == 3, what="the file to be queued")
    queued = daemon.status()["queue"]
    assert sum(queued.values()) >= 1
    daemon.stop()
    daemon.start()
    time.sleep(2.0)
    status = daemon.status()
    assert status["daemon"]["paused"] is True and status["queue"] == queued
    assert str(pics / "while_paused.png") not in daemon.listed()
    daemon.post("/resume")
    wait_for(lambda: str(pics / "while_paused.png") in daemon.listed(), what="the file after resume")
    daemon.stop()


def test_service_install_writes_the_units_and_prints_the_commands(tmp_path: Path) -> None:
    import subprocess

    from conftest import PIXDEX

    environ = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    out = subprocess.run([str(PIXDEX), "service", "install"], env=environ, capture_output=True, text=True, check=True)
    units = tmp_path / "config" / "systemd" / "user"
    service = (units / "pixdex.service").read_text()
    assert "Type=notify" in service and f"ExecStart={PIXDEX} serve" in service
    assert (units / "pixdex.socket").exists()
    assert "systemctl --user daemon-reload" in out.stdout and "enable --now" in out.stdout
    status = subprocess.run([str(PIXDEX), "service", "status"], env=environ, capture_output=True, text=True).stdout
    assert "pixdex.service: installed" in status
    out = subprocess.run([str(PIXDEX), "service", "uninstall"], env=environ, capture_output=True, text=True, check=True)
    assert not (units / "pixdex.service").exists() and "disable --now" in out.stdout


def test_indexing_runs_in_a_niced_process_of_its_own_that_dies_with_the_server(tmp_path: Path,
                                                                             model_dir: Path) -> None:
    """Queries are answered by the serving process; the indexing core runs in a child at `pipeline.nice`,
    which a kill -9 of `pixdex serve` alone (not its process group) takes down with it (PR_SET_PDEATHSIG, or
    the pipe's end when that is not available), releasing the data directory for the next start."""
    import psutil

    pics = tmp_path / "pics"
    tree(pics, 60)
    daemon = Served(tmp_path, model_dir, [pics])
    daemon.start()
    assert daemon.proc is not None
    info = daemon.status()["daemon"]
    core = psutil.Process(info["indexing_pid"])
    assert info["pid"] == daemon.proc.pid != core.pid
    assert core.ppid() == daemon.proc.pid
    assert psutil.Process(daemon.proc.pid).nice() == 0 and core.nice() == 10
    workers = [w for w in core.children() if "resource_tracker" not in " ".join(w.cmdline())]
    assert workers and all(w.nice() == 10 for w in workers)  # not 19: at least `nice`, not added twice
    deadline = time.monotonic() + 20  # each worker enters the idle class as it starts
    while any(os.sched_getscheduler(w.pid) != os.SCHED_IDLE for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(os.sched_getscheduler(w.pid) == os.SCHED_IDLE for w in workers)
    assert os.sched_getscheduler(daemon.proc.pid) == os.SCHED_OTHER  # searches are not in it
    assert not [c for c in psutil.Process(daemon.proc.pid).children()
                if c.pid != core.pid and "resource_tracker" not in " ".join(c.cmdline())]
    time.sleep(0.5)  # indexing under way
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait()
    wait_for(lambda: not core.is_running() or core.status() == psutil.STATUS_ZOMBIE, timeout=10,
             what="the indexing process to die with the server")
    daemon.start()  # the data directory's lock went with it
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 60, timeout=120, what="the queue to drain")
    daemon.stop()
    check_consistent(daemon.data, pics)


def test_an_indexing_process_that_dies_is_started_again_and_queries_go_on(tmp_path: Path,
                                                                         model_dir: Path) -> None:
    import psutil

    pics = tmp_path / "pics"
    tree(pics, 40)
    daemon = Served(tmp_path, model_dir, [pics])
    daemon.start()
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 40, timeout=120, what="the first files")
    first = daemon.status()["daemon"]["indexing_pid"]
    tree(pics, 30, seed=1)  # work under way when it dies
    time.sleep(0.3)
    os.kill(first, signal.SIGKILL)
    assert len(daemon.listed()) >= 40  # the serving process answers on its own
    assert daemon.get("/health")["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    wait_for(lambda: daemon.get("/health")["ok"] and daemon.status()["daemon"]["indexing_pid"] != first,
             timeout=30, what="a new indexing process")
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    wait_for(lambda: daemon.idle() and len(daemon.listed()) == 70, timeout=120, what="the queue to drain")
    assert "the indexing process died (exit code -9); starting another" in daemon.log.read_text()
    from pixdex.daemon.runtime import _core_settings
    from pixdex.indexer.settings import load_config

    config = load_config(daemon.config)
    for section, change in (("describe", {"enabled": True}), ("clip_tags", {"max_tags": 3})):
        import dataclasses

        other = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **change)})
        assert _core_settings(other) != _core_settings(config), section  # a reload reopens the core for it
    noise(77).save(pics / "after.png")
    wait_for(lambda: str(pics / "after.png") in daemon.listed() and daemon.idle(),
             what="a new file seen by the new watcher, and indexed")
    daemon.stop()
    check_consistent(daemon.data, pics)


def test_a_model_that_cannot_load_is_not_reopened_until_its_files_change(tmp_path: Path, model_dir: Path) -> None:
    """Reduced mode ends when the model's files change, not because they exist: a broken model would
    otherwise reopen the core (and rescan every folder) every few seconds."""
    pics = tmp_path / "pics"
    tree(pics, 3)
    models = tmp_path / "models"
    shutil.copytree(model_dir, models)
    visual = models / "clip" / "pixdex-standin-clip" / "visual" / "model.onnx"
    good = visual.read_bytes()
    visual.write_bytes(b"not an onnx graph")
    daemon = Served(tmp_path, models, [pics]).start()
    wait_for(lambda: daemon.status()["daemon"]["mode"] == "reduced", what="reduced mode")
    time.sleep(12)  # more than two checks (every 5 s)
    assert "reopening the indexing core: models appeared" not in daemon.log.read_text()
    visual.write_bytes(good)
    wait_for(lambda: daemon.status()["daemon"]["mode"] == "full", timeout=30, what="full mode once fixed")
    daemon.stop()


def test_status_answers_while_the_indexing_process_restarts(tmp_path: Path, model_dir: Path) -> None:
    pics = tmp_path / "pics"
    tree(pics, 3)
    daemon = Served(tmp_path, model_dir, [pics]).start()
    first = daemon.status()["daemon"]["indexing_pid"]
    os.kill(first, signal.SIGKILL)
    modes = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = daemon.status()  # never a 503
        modes.add(status["daemon"]["mode"])
        if status["daemon"]["indexing_pid"] not in (first, None):
            break
        time.sleep(0.1)
    assert "restarting" in modes and daemon.status()["daemon"]["mode"] == "full"
    daemon.stop()
