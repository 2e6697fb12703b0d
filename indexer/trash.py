"""Into the trash, never deleted (`trash_image`): an image and its sidecar go to the freedesktop trash through
`send2trash` — `$XDG_DATA_HOME/Trash/files` with a `.trashinfo` beside it in `Trash/info`, or the volume's
`.Trash-$UID` on another filesystem — where the file manager's "Restore" brings them back. The sidecar goes too,
a person's as well as pixdex's: it describes the image, and brought back with it, it gives the image its id,
keywords and embedding again. The sidecar goes first, so a scan between the two never takes the image for a
deleted one whose pixdex-only sidecar is to be removed. `trashed` tells which files sit in a trash (their sidecar,
restored alone, is no orphan: the image may come back)."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from send2trash import TrashPermissionError, send2trash

from pixdex.indexer.errors import PathError
from pixdex.indexer.sidecars.naming import sidecar_path


class TrashError(PathError):
    """A file that could not be moved to the trash (it stays where it is)."""


def trash_image(image: bytes, naming: str) -> list[Path]:
    """Move the image and its sidecar (if it has one) to the trash; returns what was moved. Raises TrashError naming
    the file when it cannot be moved (nothing is deleted either way)."""
    path = Path(os.fsdecode(image))
    if not os.path.isfile(image):
        raise TrashError(path, "not a file (it may have moved or gone)")
    moved: list[Path] = []
    side = sidecar_path(path, naming)
    for target in ([side] if side.is_file() and not side.is_symlink() else []) + [path]:
        try:
            send2trash(os.fsencode(target))
        except TrashPermissionError as exc:
            raise TrashError(target, f"the trash cannot take it ({exc}); left where it is") from None
        except OSError as exc:
            raise TrashError(target, f"cannot move it to the trash ({exc.strerror or exc}); left where it is") from None
        moved.append(target)
    return moved


def trashed(folders: Iterable[bytes]) -> set[bytes]:
    """The original paths of everything in the trashes files of `folders` go to: the home trash
    (`$XDG_DATA_HOME/Trash`, as send2trash finds it) and each folder's volume trash (`.Trash-$UID`, `.Trash/$UID` at
    its mount point), read from their `.trashinfo` files. Unreadable trashes count as empty."""
    home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "Trash"
    found = _originals(home / "info", None)
    for top in {_mount_point(f) for f in folders}:
        for trash in (top / ".Trash" / str(os.getuid()), top / f".Trash-{os.getuid()}"):
            found |= _originals(trash / "info", top)
    return found


def _originals(info: Path, top: Path | None) -> set[bytes]:
    """The `Path=` of each `.trashinfo` in `info` (percent-encoded; relative to `top` in a volume trash)."""
    out: set[bytes] = set()
    try:
        entries = list(os.scandir(info))
    except OSError:
        return out
    for entry in entries:
        if not entry.name.endswith(".trashinfo"):
            continue
        try:
            lines = Path(entry.path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("Path="):
                path = urllib.parse.unquote_to_bytes(line[5:].strip())
                out.add(path if top is None or path.startswith(b"/") else os.fsencode(top) + b"/" + path)
    return out


def _mount_point(folder: bytes) -> Path:
    path = Path(os.path.realpath(os.fsdecode(folder)))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path
