"""Into the trash, never deleted (`trash_image`): an image and its sidecar go to the freedesktop trash through
`send2trash` — `$XDG_DATA_HOME/Trash/files` with a `.trashinfo` beside it in `Trash/info`, or the volume's
`.Trash-$UID` on another filesystem — where the file manager's "Restore" brings them back. The sidecar goes too,
a person's as well as pixdex's: it describes the image, and brought back with it, it gives the image its id,
keywords and embedding again. The sidecar goes first, so a scan between the two never takes the image for a
deleted one whose pixdex-only sidecar is to be removed."""

from __future__ import annotations

import os
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
