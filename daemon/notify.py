"""The service manager's side channel, written out by hand: sd_notify, the watchdog, socket activation.

The protocols are small. A service tells systemd how it is doing by sending one datagram of
newline-separated KEY=VALUE lines ("READY=1", "STATUS=…") to the AF_UNIX socket named in
$NOTIFY_SOCKET: a path, or "@name" in the abstract namespace (sd_notify(3)). The watchdog period is
$WATCHDOG_USEC, meant for the process $WATCHDOG_PID (sd_watchdog_enabled(3)). Activated sockets are
file descriptors 3, 4, … counted by $LISTEN_FDS, for the process $LISTEN_PID, named by
$LISTEN_FDNAMES (sd_listen_fds(3)).

Why no dependency: PyPI's `sdnotify` (0.3.2, last released 2017) sends notifications, "@" addresses
included, but knows nothing of the watchdog period or socket activation and hides every error behind
a bare `except:`; `systemd-python` is a C extension built against libsystemd. Sending file
descriptors (FDSTORE=1) is not needed by pixdex and not done here.

Each function reads the environment from `environ` (default: os.environ) so tests can pass a dict.
Outside systemd they do nothing: notify() returns False, watchdog_interval() None, listen_fds() [].
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

from pixdex.indexer.errors import PixdexError

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START: the first passed descriptor, after stdin, stdout, stderr
LISTEN_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class ActivationError(PixdexError):
    """Descriptors passed by socket activation that pixdex cannot use."""


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (KEY=VALUE lines) to the service manager. False when there is none, or it failed."""
    named = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not named:
        return False
    if named[0] not in "/@":
        log.warning("NOTIFY_SOCKET=%s is neither a path nor an @abstract name; not notifying", named)
        return False
    address = "\0" + named[1:] if named[0] == "@" else named
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify the service manager at NOTIFY_SOCKET=%s: %s", named, exc)
        return False
    return True


def ready(status: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Start-up (or a reload) is finished: systemd now counts the service as running."""
    return notify("READY=1" + _status_line(status), environ)


def status(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """A one-line status that `systemctl --user status pixdex` shows."""
    return notify(f"STATUS={_one_line(text)}", environ)


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    return notify("STOPPING=1", environ)


def watchdog(environ: Mapping[str, str] | None = None) -> bool:
    """Still alive: send this more often than watchdog_interval() says, or systemd restarts the service."""
    return notify("WATCHDOG=1", environ)


def reloading(status: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """A reload begins; send ready() when it is done. MONOTONIC_USEC is what Type=notify-reload
    (systemd >= 253) matches against its own reload request; older managers ignore it."""
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={now_usec}" + _status_line(status), environ)


def _status_line(text: str | None) -> str:
    return f"\nSTATUS={_one_line(text)}" if text else ""


def _one_line(text: str) -> str:
    """A newline inside a value would start another assignment: flatten the text to one line."""
    return " ".join(text.splitlines())


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog() pings: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises.

    None when no watchdog is set, or it is meant for another process ($WATCHDOG_PID).
    """
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    try:
        period, owner = int(usec), int(pid) if pid else os.getpid()
    except ValueError:
        log.warning("ignoring the watchdog: WATCHDOG_USEC=%s WATCHDOG_PID=%s are not whole numbers", usec, pid)
        return None
    if period <= 0 or owner != os.getpid():
        return None
    return period / 2_000_000


def listen_fds(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed to this process (pixdex.socket), in order; [] when none."""
    return [sock for _, sock in named_listen_fds(environ)]


def named_listen_fds(environ: MutableMapping[str, str] | None = None) -> list[tuple[str, socket.socket]]:
    """The passed sockets with their names ($LISTEN_FDNAMES: FileDescriptorName=, by default the
    socket unit's name). Removes the LISTEN_* variables, so no child process takes them for its own."""
    env = os.environ if environ is None else environ
    count, pid, names = (env.pop(key, "") for key in LISTEN_VARIABLES)
    if not count:
        return []
    try:
        number, owner = int(count), int(pid)
    except ValueError:
        log.warning("ignoring socket activation: LISTEN_FDS=%s LISTEN_PID=%s are not whole numbers", count, pid)
        return []
    if owner != os.getpid():
        log.debug("LISTEN_FDS is for process %s, not this one (%s)", owner, os.getpid())
        return []
    labels = names.split(":") if names else []
    if len(labels) != number:
        labels = ["unknown"] * number  # what sd_listen_fds_with_names(3) reports when names are missing
    fds = range(LISTEN_FDS_START, LISTEN_FDS_START + number)
    return [(label, _adopt(fd)) for label, fd in zip(labels, fds, strict=True)]


def _adopt(fd: int) -> socket.socket:
    """A socket object for a passed descriptor, closed on exec like every socket Python makes."""
    try:
        sock = socket.socket(fileno=fd)  # family, type and protocol are read from the descriptor
    except OSError as exc:
        raise ActivationError(f"descriptor {fd} from LISTEN_FDS is not a usable socket ({exc.strerror}); "
                              "pixdex takes only the Unix socket of pixdex.socket") from exc
    sock.set_inheritable(False)
    return sock
