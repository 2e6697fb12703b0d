"""A sidecar follows its image: moved with it, removed with it when only pixdex wrote it, and handed over
when a RAW file takes the ``IMG.xmp`` a JPEG used.

The RAW rule (Lightroom's, docs/SIDECARS.md): ``IMG.xmp`` belongs to the RAW when there is one. A JPEG that
used ``IMG.xmp`` while it was alone gets its own ``IMG.JPG.xmp`` once ``IMG.CR2`` appears; that new sidecar
starts with the person's keywords (and rejections) from ``IMG.xmp``, which keeps them, and pixdex's own
keywords and record leave ``IMG.xmp`` (they were made for the JPEG). Which ``IMG.xmp`` was the JPEG's: one
with pixdex's record in it whose embedding, when it has one, was made from this very JPEG.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import SidecarError
from pixdex.indexer.files import atomic_write
from pixdex.indexer.metadata import as_list
from pixdex.indexer.sidecar import KeywordPlan, _rewrite, read_sidecar
from pixdex.indexer.sidecar_keys import (EMBEDDING, EMBEDDING_MODEL, EMBEDDING_OF, HIERARCHICAL, IMAGE_ID, MACHINE,
                                         MODEL, OURS, OWN_KEYS, PERSON, REJECTED, SUBJECT)
from pixdex.indexer.sidecar_keywords import escape_level, person_paths, plan_keywords, rejected_now
from pixdex.indexer.sidecar_naming import (folder_names, moved_sidecar_path, sidecar_name_of, sidecar_path, siblings,
                                           stem_sidecar_name)

RECORD = (OURS, MACHINE, REJECTED, PERSON, MODEL, EMBEDDING, EMBEDDING_MODEL, EMBEDDING_OF, IMAGE_ID)  # pixdex's, per image


def adopted(image: Path, digest: str | None, parent: str, xmp: dict[str, Any],
            seed: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """For a new sidecar of `image` (whose first packet holds `xmp`, with `seed` set on top): the ``IMG.xmp``
    the image used before another file took it, and `seed` with the person's keywords and rejections from
    it added. (None, `seed`) when there is no such sidecar."""
    names = folder_names(os.fsencode(image.parent))
    found = siblings(names)
    name = stem_sidecar_name(os.fsencode(image.name), names, found)
    if name is None or name == sidecar_name_of(os.fsencode(image.name), names, found):
        return None, seed
    path = image.with_name(os.fsdecode(name))
    try:
        before = read_sidecar(path)
    except SidecarError:
        return None, seed
    made_for = str(before.get(EMBEDDING_OF) or "")
    if not (before.get(MODEL) or before.get(MACHINE)) or (made_for and digest and made_for != digest):
        return None, seed  # pixdex never wrote it for an image, or wrote it for another content
    paths = person_paths(before, parent)
    subject = as_list(seed[SUBJECT] if SUBJECT in seed else xmp.get(SUBJECT))
    carried = {
        SUBJECT: list(dict.fromkeys([*subject, *(p[-1] for p in paths)])),
        HIERARCHICAL: list(dict.fromkeys([*as_list(xmp.get(HIERARCHICAL)),
                                          *("|".join(escape_level(level) for level in p) for p in paths)])),
        REJECTED: list(dict.fromkeys([*as_list(xmp.get(REJECTED)), *rejected_now(before, parent)])),
    }
    return path, {**seed, **carried}


def release(image: Path, path: Path, parent: str) -> None:
    """Take pixdex's machine keywords and its record for `image` out of `path` (the ``IMG.xmp`` a RAW took);
    the person's keywords and everything else stay. Raises SidecarError when it cannot be written."""
    def plan(xmp: dict[str, Any]) -> tuple[KeywordPlan, dict[str, Any]]:
        return plan_keywords(xmp, [], parent), {key: None for key in RECORD}

    _rewrite(image, parent, "", plan, create=False, path=path)


def only_ours(path: Path, parent: str) -> bool:
    """Whether this sidecar holds nothing but pixdex's own keywords and bookkeeping. A machine keyword a person
    removed is their decision too (kept for the image's return: trash, restore): such a sidecar is theirs."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        xmp = read_sidecar(path)
    except SidecarError:
        return False
    return all(k.split("[")[0] in OWN_KEYS for k in xmp) and not person_paths(xmp, parent) \
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
