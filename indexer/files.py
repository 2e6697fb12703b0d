"""Atomic replacement of files: a reader sees the old content or the new, never a mix."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

# Temp files are named by pid and a short token, never by the target's name: a name near the
# 255-byte limit must not make its temp file's name too long. `remove_stale_temps` finds them again.
TEMP_PREFIX = ".pixdex-tmp-"
STALE_AFTER = 3600.0  # a temp file of a live process older than this is stale as well


def temp_name(directory: Path) -> Path:
    return directory / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, rename it over `path`, fsync the folder.

    Keeps the permission bits of the file it replaces. Raises OSError; the temp file never stays.
    """
    temp = temp_name(path.parent)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666
    try:
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(directory: bytes, names: list[bytes]) -> int:
    """Delete pixdex's temp files among `names` (in `directory`) left by a process that died."""
    removed = 0
    for name in names:
        if not name.startswith(TEMP_PREFIX.encode()):
            continue
        path = os.path.join(directory, name)
        try:
            pid = int(name[len(TEMP_PREFIX):].split(b"-")[0])
            if _alive(pid) and time.time() - os.lstat(path).st_mtime < STALE_AFTER:
                continue
            os.unlink(path)
            removed += 1
        except (ValueError, OSError):
            continue
    return removed


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie — killed, not yet reaped — does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def remove_stale_temps_in(directory: Path) -> int:
    try:
        names = os.listdir(os.fsencode(directory))
    except OSError:
        return 0
    return remove_stale_temps(os.fsencode(directory), names)
