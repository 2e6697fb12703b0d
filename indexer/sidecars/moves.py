"""A sidecar follows its image: moved with it (`carry_over`), removed with it when only pixdex wrote it
(`remove_if_only_ours`). A person's sidecar is never replaced nor removed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.files import atomic_write
from pixdex.indexer.sidecars.keys import LOCATION, LOCATION_OURS, OWN_KEYS
from pixdex.indexer.sidecars.keywords import person_paths, rejected_now
from pixdex.indexer.sidecars.naming import moved_sidecar_path, sidecar_path
from pixdex.indexer.sidecars.read import read_sidecar


def only_ours(path: Path, parent: str) -> bool:
    """Whether this sidecar holds nothing but pixdex's own keywords and bookkeeping. A machine keyword a person
    removed is their decision too (kept for the image's return: trash, restore): such a sidecar is theirs."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        xmp = read_sidecar(path)
    except SidecarError:
        return False
    ours = {LOCATION[f] for f in LOCATION if xmp.get(LOCATION[f]) and xmp.get(LOCATION[f]) == xmp.get(LOCATION_OURS[f])}
    return all(k.split("[")[0] in OWN_KEYS or k in ours for k in xmp) and not person_paths(xmp, parent) \
        and not rejected_now(xmp, parent)


def remove_if_only_ours(image: Path, parent: str, naming: str = "image.ext.xmp") -> bool:
    """After the image was deleted: remove its sidecar only when pixdex alone wrote it (`only_ours`)."""
    path = sidecar_path(image, naming)
    if image.exists() or not only_ours(path, parent):
        return False
    path.unlink(missing_ok=True)
    return True


def carry_over(old_image: Path, new_image: Path, naming: str = "image.ext.xmp", parent: str | None = None,
               ) -> Path | None:
    """After a move, the image's sidecar goes with it. One already at the destination — of an image the move
    replaced (`mv a.jpg b.jpg`), or left behind — is replaced only when pixdex alone wrote it (`parent` given);
    a person's is never replaced (pixdex's tags are merged into it instead) and the old one then stays where it
    is. A sidecar left behind would otherwise describe whatever image appears at the old name next."""
    old = sidecar_path(old_image, naming)
    if not old.is_file():
        return None
    new = moved_sidecar_path(old_image, old, new_image)
    if old.is_symlink():  # the link goes along and still points at its target (a relative link is redone)
        target = os.path.realpath(old)
        if os.path.lexists(new):
            return None
        try:
            os.symlink(target if os.path.isabs(os.readlink(old)) else os.path.relpath(target, new.parent), new)
            old.unlink()
        except OSError as exc:
            raise SidecarError(new, f"cannot move the sidecar link here: {exc.strerror or exc}") from exc
        return new
    try:
        os.link(old, new)  # fails if `new` exists: no clobbering, unlike rename
    except FileExistsError:
        if not os.path.samefile(old, new):
            if parent is not None and only_ours(new, parent):  # the replaced image's, pixdex's alone
                os.replace(old, new)
                return new
            if parent is not None and only_ours(old, parent):  # nothing of a person's in it: merged into `new`
                old.unlink()
            return None  # a sidecar of the destination's own; a person's old one stays
        # the same file: a move cut short between link and unlink; finish it
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise SidecarError(new, f"cannot move sidecar here: {exc.strerror or exc}") from exc
        try:  # another filesystem: copy (atomically, only if still absent), then remove the old one
            if new.exists():
                return None
            atomic_write(new, old.read_bytes())
        except OSError as copy_exc:
            raise SidecarError(new, f"cannot move sidecar here: {copy_exc.strerror or copy_exc}") from copy_exc
    try:
        old.unlink()
    except OSError as exc:
        raise SidecarError(old, f"sidecar copied to {new.name} but the old one cannot be removed: "
                                f"{exc.strerror or exc}") from exc
    return new
