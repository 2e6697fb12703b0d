"""The systemd user units of `pixdex serve`: render them, write them, remove them, say what comes next.

pixdex.service runs the daemon as Type=notify: it sends READY=1 once it answers, pings the watchdog
and reloads its config on SIGHUP (pixdex.daemon.notify). pixdex.socket is optional: when enabled,
systemd holds the Unix socket and passes it to the daemon, so clients can connect while it starts.

contrib/systemd/ holds these renders for the default command %h/.local/bin/pixdex; a test keeps
them equal to what this module writes, so the text below is the one source of both.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pixdex.indexer.errors import PixdexError
from pixdex.indexer.paths import display_path

log = logging.getLogger(__name__)

SERVICE = "pixdex.service"
SOCKET = "pixdex.socket"
UNITS = (SERVICE, SOCKET)
LEGACY_TIMER = "pixdex-index.timer"  # the periodic `pixdex index` the daemon replaces
DEFAULT_SOCKET = "%t/pixdex/pixdex.sock"  # %t is $XDG_RUNTIME_DIR: the daemon's own default socket
TEMPLATE_EXEC_START: tuple[str, ...] = ("%h/.local/bin/pixdex", "serve")  # contrib/systemd/; %h is $HOME
UNIT_MODE = 0o644

SERVICE_TEXT = """\
# pixdex.service: the pixdex daemon (`pixdex serve`) as a systemd user service.
# `pixdex service install` writes this file with the absolute path of your pixdex in ExecStart=;
# the copy in pixdex's contrib/systemd/ runs %h/.local/bin/pixdex (link yours there, or edit the line).
[Unit]
Description=pixdex: keep the image index fresh and answer searches

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec=60
Restart=on-failure
RestartSec=5
TimeoutStopSec=60
Environment=PYTHONUNBUFFERED=1
# Low priority, within what a user manager may set: it runs as you, without privileges
# (systemd.exec(5), systemd.resource-control(5), sched(7), ioprio_set(2) for systemd 252; the
# system calls behind each line tried as an unprivileged user on Linux 6.18).
# - Nice= may only be raised (0..19); a negative one fails the start (201/NICE) unless RLIMIT_NICE
#   allows it. With the cpu controller on, nice orders only the processes inside this unit:
#   the indexing process and its workers add pipeline.nice on top, so searches in the main
#   (serving) process go first.
# - CPUWeight= weighs this unit against its siblings in app.slice. It needs the cpu controller
#   delegated to the user manager: upstream user@.service has Delegate=pids memory cpu since
#   systemd 252; before that the line has no effect. CPUWeight=idle (252, Linux 5.15) is
#   allowed too, but would leave searches waiting behind any busy program.
# - CPUSchedulingPolicy=batch or idle is allowed (a process may always lower itself); fifo and rr
#   need RLIMIT_RTPRIO or CAP_SYS_NICE and fail the start (214/SETSCHEDULER). Not set here: for
#   the whole unit idle would starve searches too, and batch only delays wake-ups of a daemon that
#   mostly waits. The index workers put themselves in idle instead (pipeline.idle_cpu).
# - IOSchedulingClass=best-effort (any level) or idle is allowed, realtime is not. Only the BFQ
#   and mq-deadline schedulers honour it, not "none". The index workers put themselves in idle.
# - IOWeight= is left out: user managers get no io controller (not in Delegate= above).
Nice=10
CPUWeight=20
IOSchedulingClass=best-effort
IOSchedulingPriority=7
# Open files: systemd's default soft limit of 1024 is little for a server that a local program can
# flood with connections. 8192 for both limits (a user manager may set up to its own hard limit,
# 524288 by default since systemd 240); the daemon raises its soft limit to the hard one anyway and
# caps each listener's connections well below it (server.max_connections).
LimitNOFILE=8192

[Install]
WantedBy=default.target
"""

SOCKET_TEXT = """\
# pixdex.socket: systemd holds pixdex's Unix socket and starts pixdex.service on the first connection.
# Optional: enable it together with pixdex.service, so clients can connect while the daemon starts.
[Unit]
Description=pixdex: the Unix socket of the pixdex daemon

[Socket]
ListenStream={listen}
SocketMode=0600
DirectoryMode=0700
Service=pixdex.service

[Install]
WantedBy=sockets.target
"""


class UnitError(PixdexError):
    """A unit file that cannot be written or removed, or a command that cannot go into one."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = path
        self.reason = reason


def render_service(exec_start: Sequence[str | Path], config: Path | None = None) -> str:
    """pixdex.service running `exec_start` (+ `--config FILE`, given before the subcommand).

    A Path is a literal file name, escaped for the unit file; it must be absolute. A str is
    written as it is, so specifiers work (%h: home): the template's "%h/.local/bin/pixdex".
    """
    if not exec_start:
        raise ValueError("exec_start is empty: give the pixdex executable and `serve`")
    options: list[str | Path] = ["--config", config] if config is not None else []
    words = [exec_start[0], *options, *exec_start[1:]]
    return SERVICE_TEXT.format(exec_start=" ".join(_word(word, i == 0) for i, word in enumerate(words)))


def render_socket(socket_path_spec: str = DEFAULT_SOCKET) -> str:
    """pixdex.socket listening on `socket_path_spec` (unit syntax: %t is $XDG_RUNTIME_DIR)."""
    return SOCKET_TEXT.format(listen=_word(socket_path_spec))


_PLAIN = re.compile(r"[\w/.,:+=@~-]+")
_UNSAFE_PROGRAM = set("\"'\\")  # systemd's string_is_safe(): refused in a program name, even quoted


def _word(word: str | Path, program: bool = False) -> str:
    """One word of ExecStart=: systemd expands %specifiers in every word, $VARIABLES in arguments only."""
    if isinstance(word, str):
        if not word or any(c.isspace() or not c.isprintable() for c in word):
            raise ValueError(f"{word!r} cannot be one word of a unit file: pass file names as Path")
        return word
    text = os.fspath(word)
    if not word.is_absolute():
        raise UnitError(word, "not an absolute path; systemd starts services in /, give the full path")
    if any(not c.isprintable() for c in text):  # undecodable bytes arrive as lone surrogates: not printable
        raise UnitError(word, "has control characters or bytes that are not UTF-8; a unit file cannot "
                              "hold this name, so rename it or use a link with a plain name")
    if program and _UNSAFE_PROGRAM.intersection(text):
        raise UnitError(word, "systemd refuses a program path with quotes or backslashes; "
                              "make a link to it from a plain path, such as ~/.local/bin/pixdex")
    text = text.replace("%", "%%") if program else text.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def default_exec_start() -> list[str | Path]:
    """This installation's pixdex and `serve`: the command beside the interpreter (a venv's bin/),
    else `pixdex` on PATH. Not resolved, since a venv's python is a link out of the venv."""
    beside = Path(sys.executable).parent / "pixdex"
    found = beside if os.access(beside, os.X_OK) else shutil.which("pixdex")
    if found is None:
        raise UnitError("pixdex", f"no such command beside {sys.executable} or on PATH; install pixdex "
                                  "(pip install -e .) and run `pixdex service install` from it")
    return [Path(found).absolute(), "serve"]


def unit_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$XDG_CONFIG_HOME/systemd/user, by default ~/.config/systemd/user: where user units go."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative value
        base = os.path.join(env.get("HOME") or str(Path.home()), ".config")
    return Path(base) / "systemd" / "user"


def install(unit_dir: Path, exec_start: Sequence[str | Path], config: Path | None = None,
            socket_path_spec: str = DEFAULT_SOCKET) -> list[Path]:
    """Write pixdex.service and pixdex.socket into `unit_dir` (each atomically; an unchanged one is
    left alone) and return their paths. Then run next_commands("install")."""
    program = exec_start[0] if exec_start else None
    if isinstance(program, Path) and not (program.is_file() and os.access(program, os.X_OK)):
        raise UnitError(program, "not an executable file; the service would fail with 203/EXEC. "
                                 "Give the path of the pixdex command")
    texts = {SERVICE: render_service(exec_start, config), SOCKET: render_socket(socket_path_spec)}
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnitError(unit_dir, f"cannot create the unit folder ({exc.strerror})") from exc
    return [_write(unit_dir / name, text) for name, text in texts.items()]


def _write(path: Path, text: str) -> Path:
    if _unchanged(path, text):
        log.debug("%s is up to date", path)
        return path
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            os.fchmod(file.fileno(), UNIT_MODE)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise UnitError(path, f"cannot write the unit ({exc.strerror})") from exc
    log.info("wrote %s", path)
    return path


def _unchanged(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text and (path.stat().st_mode & 0o777) == UNIT_MODE
    except (OSError, UnicodeDecodeError):
        return False


def uninstall(unit_dir: Path) -> list[Path]:
    """Remove pixdex.service, pixdex.socket and the links `systemctl --user enable` made for them
    (so a missed `disable` leaves nothing dangling); return what was removed. Other units stay."""
    removed = []
    for name in UNITS:
        links = [link for folder in ("*.wants", "*.requires") for link in unit_dir.glob(f"{folder}/{name}")]
        for path in [*filter(Path.is_symlink, links), unit_dir / name]:
            if path.is_symlink() or path.exists():
                _remove(path)
                removed.append(path)
    return removed


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        raise UnitError(path, f"cannot remove it ({exc.strerror})") from exc
    log.info("removed %s", path)


def next_commands(action: Literal["install", "uninstall"], socket: bool = True,
                  unit_dir: Path | None = None) -> list[list[str]]:
    """The `systemctl --user` commands to run, in order, after install() or around uninstall().

    install: reload, then enable and start the daemon (and its socket); first, when `unit_dir` still
    holds the old pixdex-index.timer, stop it, since two indexers would compete. `enable --now`
    does not restart a daemon that is already running: `systemctl --user restart pixdex.service`
    applies changed units to it.
    uninstall: the first command (disable --now) goes before uninstall() removes the files, the
    reload after.
    """
    user = ["systemctl", "--user"]
    if action == "uninstall":
        return [[*user, "disable", "--now", SOCKET, SERVICE], [*user, "daemon-reload"]]
    legacy = unit_dir is not None and (unit_dir / LEGACY_TIMER).exists()
    return ([[*user, "disable", "--now", LEGACY_TIMER]] if legacy else []) + [
        [*user, "daemon-reload"], [*user, "enable", "--now", *([SOCKET] if socket else []), SERVICE]]
