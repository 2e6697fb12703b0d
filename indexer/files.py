"""Files pixdex reads and writes: a regular file read safely (`read_regular`), atomic replacement (a reader sees
the old content or the new, never a mix), folders built aside and swapped in, temp files of a crash removed."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pixdex.indexer.errors import ReadError

# Temp files are named by pid and a short token, never by the target's name: a name near the
# 255-byte limit must not make its temp file's name too long. `remove_stale_temps` finds them again.
TEMP_PREFIX = ".pixdex-tmp-"
STALE_AFTER = 3600.0  # a temp file of a live process older than this is stale as well


MAX_BYTES = 1024 << 20  # `decode.max_megabytes`' default


def read_regular(path: bytes, max_bytes: int = MAX_BYTES) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file and the stat of what was read. A FIFO, device or folder is refused
    at once (opened non-blocking, so a FIFO cannot hang the reader), and so is a file over `max_bytes`
    (before reading, and again if it grows while being read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadError(os.fsdecode(path), "not a regular file (a pipe, device or folder); pixdex reads only "
                                               "image files")
        if st.st_size > max_bytes:
            raise _too_large(path, st.st_size, max_bytes)
        chunks, read = [], 0
        while chunk := os.read(fd, 1 << 20):
            read += len(chunk)
            if read > max_bytes:
                raise _too_large(path, read, max_bytes)
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def _too_large(path: bytes, size: int, max_bytes: int) -> ReadError:
    return ReadError(os.fsdecode(path), f"{size / 2**20:,.0f} MB, more than decode.max_megabytes "
                                        f"({max_bytes / 2**20:,.0f}); raise it in the config to index this file")


def temp_name(directory: Path) -> Path:
    return directory / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write(path: Path, data: bytes, new_mode: int = 0o666) -> None:
    """Write `data` to a temp file beside `path`, fsync it, rename it over `path`, fsync the folder.

    Keeps the permission bits of the file it replaces (`new_mode` for a new one, less the umask). Raises
    OSError; the temp file never stays.
    """
    temp = temp_name(path.parent)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = new_mode
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


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Build a folder beside `final` and swap it in only when the block completes; gone otherwise."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield stage
        swap_dir(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def swap_dir(stage: Path, final: Path) -> None:
    """Put the finished folder `stage` at `final` (a sibling), replacing what is there: readers see the old
    folder or the new one, never a mix."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        stage.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(final)


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
    import psutil  # late: the command line's client path reads this module and needs no psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
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


# Files a person owns (sidecars) --------------------------------------------------------------
class ChangedMeanwhile(Exception):
    """The file changed (or appeared, or vanished) after it was read: read it again and merge again."""


class Refused(Exception):
    """Replacing this file would change what it is (its links, its permissions): left as it is."""


def seen(st: os.stat_result | None) -> tuple[int, int, int, int] | None:
    """What identifies one version of a file, for `replace_owned`: inode, size, mtime and ctime."""
    return None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def owned_target(path: Path) -> Path:
    """The file a write to `path` must change: a symlink's target (the link stays a link)."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if not target.exists():
        raise Refused(f"a symlink to {target}, which does not exist; fix or remove the link")
    return target


def replace_owned(path: Path, data: bytes, was: tuple[int, int, int, int] | None) -> None:
    """Replace a file a person owns with `data`, atomically, keeping what it is.

    Through a symlink to its target; with the same permission bits (group and other bits too, whatever
    the umask), owner and group when this process may set them, and extended attributes. A file with
    several hard links, or one that is read-only, is refused (`Refused`): a rename would split the
    links, and read-only means "do not touch". `was` is `seen()` of the version the new content was
    merged from (None: it did not exist); if the file is not that version any more just before the
    rename, nothing is written and `ChangedMeanwhile` is raised, so the caller merges again.

    Every step after the first look is relative to the folder, opened once: a folder renamed meanwhile (a person
    moving an album while pixdex writes a sidecar in it) gets the file beside its image, and a failed write never
    leaves its temp file behind in the folder's new place.
    """
    target = owned_target(path)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not a regular file")
        if st.st_nlink > 1:
            raise Refused(f"it has {st.st_nlink} hard links, and replacing it would split them; "
                          "make it a single file (cp, then mv over it) for pixdex to write it")
        if not st.st_mode & 0o200 or not os.access(target, os.W_OK):
            raise Refused("it is read-only; make it writable (chmod u+w) and pixdex adds its tags within seconds")
    if seen(st) != was:
        raise ChangedMeanwhile
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _replace_in(folder, target, data, st, was)
        os.fsync(folder)
    finally:
        os.close(folder)


def _replace_in(folder: int, target: Path, data: bytes, st: os.stat_result | None,
                was: tuple[int, int, int, int] | None) -> None:
    """`replace_owned`'s write, every name relative to the `folder` descriptor."""
    temp, name = temp_name(Path()).name, target.name
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600 if st else 0o666, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if st is not None:
                _keep_identity(handle.fileno(), target, st)
            os.fsync(handle.fileno())
        if st is None:
            try:
                os.link(temp, name, src_dir_fd=folder, dst_dir_fd=folder)  # never over a file that appeared meanwhile
            except FileExistsError:
                raise ChangedMeanwhile from None
            os.unlink(temp, dir_fd=folder)
        else:
            if seen(_stat_or_none(name, folder)) != was:  # the last look before the rename
                raise ChangedMeanwhile
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=folder)
        raise


def _stat_or_none(name: str, folder: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=folder)
    except FileNotFoundError:
        return None


def _keep_identity(fd: int, source: Path, st: os.stat_result) -> None:
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        for uid in (st.st_uid, -1):  # the owner if allowed (root), else at least the group (a member may)
            try:
                os.fchown(fd, uid, st.st_gid)
                break
            except PermissionError:
                continue
    os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after chown, which may clear set-id bits
    try:
        names = os.listxattr(source)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(fd, name, os.getxattr(source, name))
        except OSError as exc:  # security.* needs privileges; the rest is copied
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
                raise
