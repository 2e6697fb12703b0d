"""Debounced file events: which folders changed, and when they are ready to be rescanned.

watchdog watches every root recursively (inotify; polling for roots the config names, network
and FUSE filesystems, or when the folders outnumber the inotify watch limit). Events only mark
folders *dirty*: a file event its folder (without subfolders), a folder event the whole folder.
The daemon rescans dirty folders with the scanner (`diff_tree`), which keeps a file's identity
across renames and moves, so an event never has to be trusted about what happened — only about
where to look. Everything in one quiet moment is rescanned together: a move's two ends meet.

A file is taken once it is complete: a close-after-write (inotify's IN_CLOSE_WRITE) releases it
at once; without one (polling, or a writer that keeps the file open), its folder waits until the
file has not changed for `watch.settle` seconds. Partial downloads (`.part`, `.crdownload`, …)
are not image names, so only their final rename counts.

Events can be lost: past the watch limit inotify silently watches nothing more, and a queue
overflow is only logged by watchdog. So the limit is checked before watching, the overflow log
line is caught, and both ask the daemon for a full reconcile.

A folder inotify may not watch (chmod 000, another user's) is left out, silently: the scan reports
it (`pixdex status`), and looks again once it can be read. watchdog itself keeps such a folder as a
watch numbered -1 shared by all of them, and warns for each one after the first, the text holding
the map of every watched folder (a 2 GB log watching "/"); `_Inotify` refuses them instead.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyFD, Mask, Watch
from watchdog.observers.polling import PollingObserver

from pixdex.indexer.paths import display_path
from pixdex.indexer.scan.walk import IGNORE_MARKERS, excluded, is_image_name, skipped_dir
from pixdex.indexer.sections import WatchSettings
from pixdex.indexer.sidecars.naming import is_raw_name, is_sidecar_name

log = logging.getLogger(__name__)

EVENTS = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent, DirCreatedEvent,
          DirDeletedEvent, DirMovedEvent, FileAttribEvent]  # not opens nor close-without-write
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "davfs", "sshfs", "lustre"}
MAX_WAIT = 3.0  # events that never stop (a long copy) still get rescanned this often
WATCHES_SYSCTL = "/proc/sys/fs/inotify/max_user_watches"


@dataclass
class RootWatch:
    path: bytes
    mode: str = "starting"  # inotify | polling | degraded
    why: str = ""
    observer: Any = None
    dirs: int = 0  # inotify watches it took (counted when it started)

    def as_dict(self) -> dict[str, str]:
        return {"path": display_path(self.path), "mode": self.mode, "why": self.why}


@dataclass
class Dirty:
    """Folders to rescan: `deep` ones with their subfolders, `shallow` ones without."""

    deep: set[bytes] = field(default_factory=set)
    shallow: set[bytes] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.deep or self.shallow)


class Watcher(FileSystemEventHandler):
    def __init__(self, settings: WatchSettings, skip: list[str], exclude: list[str], ignore: list[bytes],
                 on_lost: Callable[[str], None]) -> None:
        self.settings = settings
        self.skip = skip
        self.exclude = exclude
        self.ignore = [p.rstrip(b"/") + b"/" for p in ignore]  # pixdex's own folders (the data directory)
        self.on_lost = on_lost
        self.roots: dict[bytes, RootWatch] = {}
        self._dirty = Dirty()
        self._writing: dict[bytes, float] = {}  # file → last write seen, until closed
        self._moves: dict[bytes, set[bytes]] = {}  # folder → the folders a move joined it to
        self._first = 0.0
        self._last = 0.0
        self._lock = threading.Condition()
        self._poked = False
        self.on_activity: Callable[[], None] | None = None  # told of a burst's first event (watchdog's thread)
        # watch/check (the scanner thread) and stop (closing, another thread) change the observers under
        # this one; once stopped, nothing starts an observer again.
        self._roots_lock = threading.Lock()
        self._stopped = False
        self._overflow = _OverflowCatcher(lambda: on_lost("the inotify event queue overflowed"))
        logging.getLogger("watchdog.observers.inotify_c").addHandler(self._overflow)
        self.events = 0

    # Roots ------------------------------------------------------------------------------------
    def watch(self, roots: list[bytes]) -> None:
        """Watch exactly these roots: new ones are added, ones no longer listed are dropped."""
        with self._roots_lock:
            if not self._stopped:
                self._watch(roots)

    def _watch(self, roots: list[bytes]) -> None:
        for path in [p for p in self.roots if p not in roots]:
            self._unwatch(self.roots.pop(path))
        for path in roots:
            if path in self.roots and self.roots[path].observer is not None:
                continue
            self._start(self.roots.setdefault(path, RootWatch(path)))

    def _budget(self) -> int:
        """inotify watches left for another root."""
        return _watch_budget() - sum(r.dirs for r in self.roots.values() if r.mode == "inotify" and r.observer)

    def _start(self, root: RootWatch) -> None:
        if not os.path.isdir(root.path):
            root.mode, root.why = "degraded", "the folder is missing (unmounted?); retried every few seconds"
            log.warning("%s: not watched: the folder does not exist (create it, or set library.folders in the "
                        "config / `pixdex watch add DIR`); looking again every few seconds", display_path(root.path))
            return
        dirs = _count_dirs(root.path, self.skip)
        reason = self._poll_reason(root.path, dirs, self._budget())
        try:
            observer = PollingObserver(timeout=self.settings.poll_interval) if reason else InotifyObserver()
            observer.schedule(self, os.fsdecode(root.path), recursive=True, event_filter=EVENTS)
            observer.daemon = True
            observer.start()
        except OSError as exc:  # inotify itself refused (instances limit, …): poll instead
            if reason:
                raise
            log.warning("%s: cannot watch with inotify (%s); polling every %g s", os.fsdecode(root.path), exc,
                        self.settings.poll_interval)
            root.mode, root.why = "polling", f"inotify refused: {exc}"
            observer = PollingObserver(timeout=self.settings.poll_interval)
            observer.schedule(self, os.fsdecode(root.path), recursive=True, event_filter=EVENTS)
            observer.daemon = True
            observer.start()
            root.observer = observer
            return
        root.observer = observer
        root.dirs = 0 if reason else dirs
        root.mode, root.why = ("polling", reason) if reason else ("inotify", f"{dirs} folder(s) watched")
        (log.warning if reason and "config" not in reason else log.info)(
            "%s: %s (%s)", os.fsdecode(root.path), root.mode, root.why)

    def _poll_reason(self, path: bytes, dirs: int, budget: int) -> str:
        text = os.fsdecode(path)
        if any(os.path.realpath(os.path.expanduser(p)).rstrip("/") in (text, "/") or text.startswith(
                os.path.realpath(os.path.expanduser(p)).rstrip("/") + "/") for p in self.settings.poll):
            return "watch.poll in the config asks for polling"
        fstype = filesystem_type(path)
        if fstype in NETWORK_FS or fstype.startswith("fuse"):
            return f"a {fstype} filesystem: inotify does not see changes made on other machines"
        if dirs > budget:
            return (f"{dirs} folders exceed the inotify watches left ({max(budget, 0)} of "
                    f"fs.inotify.max_user_watches); raise it with `sudo sysctl fs.inotify.max_user_watches=524288` "
                    "(and in /etc/sysctl.d/) and send pixdex SIGHUP")
        return ""

    def _unwatch(self, root: RootWatch) -> None:
        if root.observer is not None:
            root.observer.stop()
            root.observer.join(timeout=5)
            root.observer = None

    def check(self) -> list[bytes]:
        """Restart observers that died or whose folder came back; returns roots that came back."""
        with self._roots_lock:
            return [] if self._stopped else self._check()

    def _check(self) -> list[bytes]:
        back = []
        for root in self.roots.values():
            alive = root.observer is not None and root.observer.is_alive()
            if alive and os.path.isdir(root.path):
                continue
            if root.observer is not None:
                self._unwatch(root)
                root.mode, root.why = "degraded", "the folder went away, or its watcher stopped; retrying"
                log.warning("%s: %s", os.fsdecode(root.path), root.why)
            elif os.path.isdir(root.path):
                self._start(root)
                back.append(root.path)
        return back

    def stop(self) -> None:
        with self._roots_lock:
            self._stopped = True
            for root in self.roots.values():
                self._unwatch(root)
        logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._overflow)

    # Events -----------------------------------------------------------------------------------
    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [os.fsencode(event.src_path)]
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            paths.append(os.fsencode(event.dest_path))
        now = time.monotonic()
        with self._lock:
            touched = False
            for n, path in enumerate(paths):
                if self._ignored(path, event.is_directory):
                    continue
                if event.is_directory:
                    self._dirty.deep.add(path)
                    if isinstance(event, DirMovedEvent) and n == 0:
                        self._writing = {p: t for p, t in self._writing.items() if not p.startswith(path + b"/")}
                    touched = True
                    continue
                name = os.path.basename(path)
                if name in IGNORE_MARKERS:
                    self._dirty.deep.add(os.path.dirname(path))
                    touched = True
                    continue
                if not (is_image_name(name) or is_sidecar_name(name) or is_raw_name(name)) or name.startswith(b"."):
                    continue  # a RAW counts: arriving, it takes the IMG.xmp a JPEG beside it used (docs/SIDECARS.md)
                # Attributes are worth a look: a sidecar made writable (pixdex may write it now), an image made
                # readable (it failed for want of permission); the folder's scan compares stats, cheaply.
                if isinstance(event, (FileModifiedEvent, FileCreatedEvent)) and is_image_name(name):
                    self._writing[path] = now  # a sidecar is read as it is: a half-written one is read again
                elif isinstance(event, FileClosedEvent) or n == 0:
                    self._writing.pop(path, None)
                self._dirty.shallow.add(os.path.dirname(path))
                touched = True
            if touched and len(paths) == 2:  # both ends of a move are rescanned together, or it splits in two
                ends = [p if event.is_directory else os.path.dirname(p) for p in paths]
                group = set(ends).union(*(self._moves.get(e, set()) for e in ends))
                for folder in group:
                    self._moves[folder] = group
            first = touched and not self._first
            if touched:
                self.events += 1
                self._first = self._first or now
                self._last = now
                self._lock.notify_all()
        if first and self.on_activity is not None:
            self.on_activity()  # the first event of a burst: get ready while the debounce runs

    def _ignored(self, path: bytes, is_dir: bool) -> bool:
        if any(path.startswith(i) or path + b"/" == i for i in self.ignore):
            return True
        root = next((r for r in self.roots if path.startswith(r.rstrip(b"/") + b"/")), None)
        if root is None:
            return False
        parts = path[len(root.rstrip(b"/")) + 1:].split(b"/")
        if any(skipped_dir(part, self.skip) for part in (parts if is_dir else parts[:-1])):
            return True
        return bool(self.exclude) and excluded(path, self.exclude)

    def take(self, timeout: float) -> Dirty | None:
        """Wait up to `timeout` for folders that are ready to rescan; None when there are none yet.

        Ready: `debounce` seconds passed without a new event (or MAX_WAIT since the first), and no file
        in the folder is still being written (changed within `settle`, no close seen)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                now = time.monotonic()
                if self._dirty and (now - self._last >= self.settings.debounce or now - self._first >= MAX_WAIT):
                    ready = self._ready(now)
                    if ready:
                        return ready
                wait = deadline - now
                if wait <= 0 or self._poked:
                    self._poked = False
                    return None
                # Nothing dirty: sleep until an event (or `poke`) notifies; else look again as the debounce ends.
                self._lock.wait(min(wait, max(0.02, self.settings.debounce / 2)) if self._dirty else wait)

    def poke(self) -> None:
        """End a `take` now (the scanner has a job)."""
        with self._lock:
            self._poked = True
            self._lock.notify_all()

    def _ready(self, now: float) -> Dirty | None:
        settle = self.settings.settle
        self._writing = {p: t for p, t in self._writing.items() if now - t < settle}
        busy = {os.path.dirname(p) for p in self._writing}

        def held(folder: bytes, deep: bool) -> bool:
            return any(b == folder or (deep and b.startswith(folder + b"/")) for b in busy)

        # A folder held back holds back the folders a move joined it to: the two ends must meet in one scan.
        blocked = {f for f in self._dirty.deep if held(f, True)} | {f for f in self._dirty.shallow if held(f, False)}
        blocked |= {other for f in blocked for other in self._moves.get(f, ())}
        ready = Dirty({d for d in self._dirty.deep if d not in blocked},
                      {d for d in self._dirty.shallow if d not in blocked})
        if not ready:
            return None
        self._dirty.deep -= ready.deep
        self._dirty.shallow -= ready.shallow
        for folder in ready.deep | ready.shallow:
            self._moves.pop(folder, None)
        if not self._dirty:
            self._first = 0.0
        return ready

    def pending(self) -> int:
        with self._lock:
            return len(self._dirty.deep) + len(self._dirty.shallow)


class _Inotify(InotifyFD):
    """watchdog's inotify, refusing a folder it may not watch. watchdog's own takes inotify_add_watch's
    EACCES as success: the folder becomes a watch numbered -1, which the next such folder finds already
    there, and warns (RuntimeWarning) with the whole watch group in the text. Refused, a subfolder is
    skipped (watchdog goes on with the rest) and a root raises (the observer does not start)."""

    def _get_or_create_watch(self, path: bytes, mask: Mask) -> Watch:
        watch = super()._get_or_create_watch(path, mask)
        if watch.wd != -1:
            return watch
        del self._watch_for_wd[watch.wd]  # never has callbacks: each -1 is refused before one is added
        raise PermissionError(errno.EACCES, "inotify may not watch this folder", os.fsdecode(path))


class InotifyObserver(BaseObserver):
    """watchdog's InotifyObserver on `_Inotify`."""

    def __init__(self) -> None:
        self._inotify = _Inotify()
        self._inotify.start()
        super().__init__(InotifyEmitter, inotify_fd=self._inotify)

    def on_thread_start(self) -> None:
        try:
            super().on_thread_start()  # starts the emitters: a root that cannot be watched raises here
        except BaseException:
            self._stop_inotify()
            raise

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._stop_inotify()

    def _stop_inotify(self) -> None:
        self._inotify.stop()
        self._inotify.join()


class _OverflowCatcher(logging.Handler):
    """watchdog only logs an inotify queue overflow; this turns the log line into a reconcile."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.DEBUG)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


def filesystem_type(path: bytes) -> str:
    """The type of the filesystem holding `path`, from /proc/self/mounts (longest mount point wins)."""
    best, fstype = b"", ""
    try:
        with open("/proc/self/mounts", "rb") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace(b"\\040", b" ")
                if (path == point or path.startswith(point.rstrip(b"/") + b"/")) and len(point) >= len(best):
                    best, fstype = point, fields[2].decode(errors="replace")
    except OSError:
        pass
    return fstype


def _watch_budget() -> int:
    """inotify watches pixdex may use: the per-user limit less a tenth for other programs."""
    try:
        limit = int(Path(WATCHES_SYSCTL).read_text())
    except (OSError, ValueError):
        limit = 8192
    return int(limit * 0.9)


def _count_dirs(root: bytes, skip: list[str]) -> int:
    count = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        count += 1
        try:
            with os.scandir(folder) as entries:
                stack += [e.path for e in entries if e.is_dir(follow_symlinks=False) and not skipped_dir(e.name, skip)]
        except OSError:
            continue
    return count
