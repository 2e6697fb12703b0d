"""systemd side of `pixdex serve`: the units pass the real `systemd-analyze verify`, install and
uninstall touch only pixdex's files, and sd_notify / socket activation work over real sockets."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixdex.daemon import notify, units

REPO = Path(__file__).resolve().parent.parent
CONTRIB = REPO / "contrib" / "systemd"
VENV_PIXDEX = Path(sys.executable).parent / "pixdex"
PROGRAM = VENV_PIXDEX if os.access(VENV_PIXDEX, os.X_OK) else Path(sys.executable)  # verify wants it to exist
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian package "
                                                           "`systemd`): the units cannot be verified")


# systemd-analyze verify ------------------------------------------------------------------------
def verify(tmp_path: Path, *unit_files: Path) -> list[str]:
    """Run the real `systemd-analyze verify --user --man=no` on `unit_files`; return its complaints.

    --user loads them as a user manager would (%t is $XDG_RUNTIME_DIR, %h is $HOME), which needs
    XDG_RUNTIME_DIR set, even with no user manager running ("Failed to initialize manager" otherwise):
    a private one in tmp_path, with HOME and XDG_CONFIG_HOME there too so no real user unit is read.
    --man=no: do not look up Documentation=man: pages. verify prints warnings and still exits 0
    ("Unknown key …, ignoring"), so every output line naming a pixdex unit counts as a failure.
    """
    runtime, home = tmp_path / "runtime", tmp_path / "home"
    runtime.mkdir(mode=0o700, exist_ok=True)
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
           "XDG_CONFIG_HOME": str(home / ".config")}
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "verify", "--user", "--man=no", *map(str, unit_files)], env=env,
                          capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0 or lines, f"systemd-analyze failed silently with status {done.returncode}"
    return [line for line in lines if "pixdex" in line or done.returncode != 0]


def write_units(directory: Path, service: str, socket_text: str | None = None) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / units.SERVICE).write_text(service)
    (directory / units.SOCKET).write_text(socket_text or units.render_socket())
    return [directory / units.SERVICE, directory / units.SOCKET]


@needs_analyze
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    files = write_units(tmp_path / "units", units.render_service([PROGRAM, "serve"], config))
    assert verify(tmp_path, *files) == []


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a command that does not exist and an unknown key are reported."""
    missing = tmp_path / "nowhere" / "pixdex"
    service = units.render_service([missing, "serve"]).replace("Nice=10", "Nice=10\nNiceness=5")
    complaints = verify(tmp_path, *write_units(tmp_path / "units", service))
    assert any(str(missing) in line for line in complaints), complaints
    assert any("Niceness" in line for line in complaints), complaints


@needs_analyze
def test_a_program_path_with_spaces_percent_and_dollar_reaches_systemd_intact(tmp_path: Path) -> None:
    """verify checks that ExecStart='s program exists, so it passes only if systemd reads the path back
    exactly: quoted for the spaces, %% for specifiers, and $ left alone (no variables in a program)."""
    odd = tmp_path / "my tools 100% %h $HOME ${USER}"
    odd.mkdir()
    (odd / "pixdex").symlink_to(PROGRAM)
    files = write_units(tmp_path / "units", units.render_service([odd / "pixdex", "serve"]))
    assert verify(tmp_path, *files) == []


def test_arguments_escape_quotes_backslashes_percent_and_dollar() -> None:
    text = units.render_service([Path("/usr/bin/pixdex"), "serve"], Path("/home/o'brien/\"q\" \\ 5% $HOME.toml"))
    assert "\nExecStart=/usr/bin/pixdex --config \"/home/o'brien/\\\"q\\\" \\\\ 5%% $$HOME.toml\" serve\n" in text


@needs_analyze
def test_the_checked_in_templates_pass_verify(tmp_path: Path) -> None:
    """contrib/systemd/ runs %h/.local/bin/pixdex: give the verifying $HOME one."""
    bin_dir = tmp_path / "home" / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "pixdex").symlink_to(PROGRAM)
    assert verify(tmp_path, CONTRIB / units.SERVICE, CONTRIB / units.SOCKET) == []


def test_checked_in_templates_are_the_rendered_units() -> None:
    regenerate = ("regenerate them: .venv/bin/python -c 'from pathlib import Path; from pixdex.daemon import units; "
                  "units.install(Path(\"contrib/systemd\"), list(units.TEMPLATE_EXEC_START))'")
    assert (CONTRIB / units.SERVICE).read_text() == units.render_service(list(units.TEMPLATE_EXEC_START)), regenerate
    assert (CONTRIB / units.SOCKET).read_text() == units.render_socket(), regenerate
    assert sorted(p.name for p in CONTRIB.iterdir()) == sorted(units.UNITS)


# rendering -------------------------------------------------------------------------------------
def test_service_runs_serve_with_the_config_before_the_subcommand(tmp_path: Path) -> None:
    text = units.render_service([Path("/opt/pixdex/bin/pixdex"), "serve"], Path("/home/a/pixdex.toml"))
    assert "\nExecStart=/opt/pixdex/bin/pixdex --config /home/a/pixdex.toml serve\n" in text
    for line in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=60",
                 "Restart=on-failure", "RestartSec=5", "TimeoutStopSec=60", "Environment=PYTHONUNBUFFERED=1",
                 "WantedBy=default.target"):
        assert f"\n{line}\n" in text
    assert "Also=" not in text
    assert "\nExecStart=/usr/bin/pixdex serve\n" in units.render_service([Path("/usr/bin/pixdex"), "serve"])


def test_socket_listens_privately_for_the_service() -> None:
    text = units.render_socket()
    for line in ("ListenStream=%t/pixdex/pixdex.sock", "SocketMode=0600", "DirectoryMode=0700",
                 "Service=pixdex.service", "WantedBy=sockets.target"):
        assert f"\n{line}\n" in text
    assert "\nListenStream=%t/other.sock\n" in units.render_socket("%t/other.sock")


def test_words_that_cannot_go_into_a_unit_are_refused() -> None:
    with pytest.raises(units.UnitError, match="not an absolute path"):
        units.render_service([Path("bin/pixdex"), "serve"])
    with pytest.raises(units.UnitError, match="not UTF-8"):
        units.render_service([Path(os.fsdecode(b"/opt/\xff/pixdex")), "serve"])
    with pytest.raises(units.UnitError, match="control characters"):
        units.render_service([Path("/opt/new\nline/pixdex"), "serve"])
    with pytest.raises(units.UnitError, match="quotes or backslashes"):
        units.render_service([Path("/home/o'brien/bin/pixdex"), "serve"])
    with pytest.raises(ValueError, match="one word"):
        units.render_service([Path("/usr/bin/pixdex"), "serve now"])


# install / uninstall ---------------------------------------------------------------------------
def test_unit_dir_follows_xdg_config_home() -> None:
    assert units.unit_dir({"XDG_CONFIG_HOME": "/c", "HOME": "/h"}) == Path("/c/systemd/user")
    assert units.unit_dir({"HOME": "/h"}) == Path("/h/.config/systemd/user")
    assert units.unit_dir({"XDG_CONFIG_HOME": "relative", "HOME": "/h"}) == Path("/h/.config/systemd/user")


def test_default_exec_start_is_the_pixdex_beside_this_interpreter() -> None:
    assert VENV_PIXDEX.exists(), "the suite runs from an installed venv"
    assert units.default_exec_start() == [VENV_PIXDEX, "serve"]


def test_install_writes_both_units_atomically_and_idempotently(tmp_path: Path) -> None:
    unit_dir = tmp_path / "config" / "systemd" / "user"
    config = tmp_path / "config.toml"
    written = units.install(unit_dir, [PROGRAM, "serve"], config)
    assert written == [unit_dir / units.SERVICE, unit_dir / units.SOCKET]
    assert written[0].read_text() == units.render_service([PROGRAM, "serve"], config)
    assert written[1].read_text() == units.render_socket()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in written)
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in written]
    assert units.install(unit_dir, [PROGRAM, "serve"], config) == written
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in written] == before  # unchanged: left alone
    units.install(unit_dir, [PROGRAM, "serve"], None)  # changed: replaced
    assert "--config" not in written[0].read_text()
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted(units.UNITS)  # no temporary files left


def test_install_refuses_a_program_that_is_not_executable(tmp_path: Path) -> None:
    plain = tmp_path / "pixdex"
    plain.write_text("")
    with pytest.raises(units.UnitError, match="not an executable"):
        units.install(tmp_path / "units", [plain, "serve"])
    assert not (tmp_path / "units").exists()


def test_install_names_a_unit_folder_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "systemd"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(units.UnitError, match=r"systemd/user: cannot create the unit folder"):
        units.install(blocker / "user", [PROGRAM, "serve"])


def test_uninstall_removes_only_pixdex_units_and_their_enable_links(tmp_path: Path) -> None:
    unit_dir = tmp_path / "user"
    units.install(unit_dir, [PROGRAM, "serve"])
    (unit_dir / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    (unit_dir / "pixdex-index.timer").write_text("[Timer]\n")
    wants = unit_dir / "default.target.wants"
    wants.mkdir()
    (wants / units.SERVICE).symlink_to(unit_dir / units.SERVICE)
    (wants / "other.service").symlink_to(unit_dir / "other.service")
    (unit_dir / "sockets.target.wants").mkdir()
    (unit_dir / "sockets.target.wants" / units.SOCKET).symlink_to(unit_dir / units.SOCKET)

    removed = units.uninstall(unit_dir)
    assert sorted(removed) == sorted([unit_dir / units.SERVICE, unit_dir / units.SOCKET, wants / units.SERVICE,
                                      unit_dir / "sockets.target.wants" / units.SOCKET])
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted(
        ["other.service", "pixdex-index.timer", "default.target.wants", "sockets.target.wants"])
    assert [p.name for p in wants.iterdir()] == ["other.service"]
    assert units.uninstall(unit_dir) == []
    assert units.uninstall(tmp_path / "absent") == []


def test_next_commands_enable_after_install_and_disable_before_uninstall(tmp_path: Path) -> None:
    user = ["systemctl", "--user"]
    assert units.next_commands("install") == [[*user, "daemon-reload"],
                                              [*user, "enable", "--now", "pixdex.socket", "pixdex.service"]]
    assert units.next_commands("install", socket=False)[-1] == [*user, "enable", "--now", "pixdex.service"]
    (tmp_path / "pixdex-index.timer").write_text("[Timer]\n")
    assert units.next_commands("install", unit_dir=tmp_path)[0] == [*user, "disable", "--now", "pixdex-index.timer"]
    assert units.next_commands("uninstall") == [[*user, "disable", "--now", "pixdex.socket", "pixdex.service"],
                                                [*user, "daemon-reload"]]


# sd_notify -------------------------------------------------------------------------------------
@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A stand-in service manager: a datagram socket bound in tmp_path, named by NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, {"NOTIFY_SOCKET": str(path)}
    sock.close()


def test_notifications_arrive_as_one_datagram_of_assignments(manager: tuple[socket.socket, dict[str, str]]) -> None:
    sock, environ = manager
    assert notify.ready("watching 3 folders", environ)
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching 3 folders"
    assert notify.ready(environ=environ)
    assert sock.recv(4096) == b"READY=1"
    assert notify.status("indexed 10 of 20\nnext: beach.jpg", environ)
    assert sock.recv(4096) == b"STATUS=indexed 10 of 20 next: beach.jpg"
    assert notify.stopping(environ) and sock.recv(4096) == b"STOPPING=1"
    assert notify.watchdog(environ) and sock.recv(4096) == b"WATCHDOG=1"


def test_reloading_carries_the_monotonic_clock(manager: tuple[socket.socket, dict[str, str]]) -> None:
    sock, environ = manager
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.reloading("reading config", environ)
    lines = sock.recv(4096).decode().split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1" and lines[2] == "STATUS=reading config"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_abstract_notify_socket() -> None:
    name = f"pixdex-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify.ready("up", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_no_manager_means_false(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert notify.ready(environ={}) is False
    assert notify.watchdog({"NOTIFY_SOCKET": ""}) is False
    with caplog.at_level(logging.WARNING, logger="pixdex.daemon.notify"):
        assert notify.ready(environ={"NOTIFY_SOCKET": "vsock:2:1234"}) is False
        assert notify.ready(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "neither a path nor an @abstract name" in caplog.text
    assert f"NOTIFY_SOCKET={tmp_path / 'gone'}" in caplog.text


def test_watchdog_interval_is_half_the_period_for_this_process_only() -> None:
    me = str(os.getpid())
    assert notify.watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": me}) == 30.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "3000", "WATCHDOG_PID": me}) == 0.0015
    assert notify.watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getppid())}) is None
    assert notify.watchdog_interval({}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


# socket activation -----------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import os, sys
    from pixdex.daemon import notify
    passed = int(sys.argv[1])
    if passed != 3:                # what systemd does before exec: the socket becomes fd 3
        os.dup2(passed, 3)
        os.close(passed)
    os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="pixdex.socket")
    [(name, sock)] = notify.named_listen_fds()
    leaked = [key for key in os.environ if key.startswith("LISTEN_")]
    print(name, sock.fileno(), sock.family.name, sock.type.name, os.get_inheritable(3), leaked, flush=True)
    connection, _ = sock.accept()
    connection.sendall(b"pong:" + connection.recv(100))
    connection.close()
""")


def test_listen_fds_adopts_a_passed_listening_socket(tmp_path: Path) -> None:
    path = tmp_path / "pixdex.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(listener.fileno())], pass_fds=[listener.fileno()],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            pytest.fail(f"the child printed nothing: {child.communicate(timeout=30)[1]}")
        report = line.split()  # name, fd, family, type, inheritable, LISTEN_* left
        assert report == ["pixdex.socket", "3", "AF_UNIX", "SOCK_STREAM", "False", "[]"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(str(path))
            client.sendall(b"ping")
            assert client.recv(100) == b"pong:ping"
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
        child.wait()


def test_listen_fds_for_another_process_are_ignored_and_cleared() -> None:
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getppid()), "LISTEN_FDNAMES": "pixdex.socket", "KEEP": "1"}
    assert notify.listen_fds(environ) == []
    assert environ == {"KEEP": "1"}
    assert notify.listen_fds({}) == []
    assert notify.listen_fds({"LISTEN_FDS": "one", "LISTEN_PID": str(os.getpid())}) == []


def test_a_passed_descriptor_that_is_not_a_socket_is_named(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os
        from pixdex.daemon import notify
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 3)
        try:
            notify.listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())})
        except notify.ActivationError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "descriptor 3 from LISTEN_FDS is not a usable socket" in done.stdout, done.stderr
