"""Every image file under a folder, depth first, each folder entered once.

A folder holding an ignore marker (`IGNORE_MARKERS`) is skipped with what is below; `library.skip_dirs`
names folders never entered, `library.exclude` paths never indexed. With `follow_symlinks`, a link is
followed only when its target lies outside the library (what lies inside is indexed under its own path).
Each file comes with the version of its sidecar (`sidecars.state.sidecar_version`).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator

from pixdex.indexer.catalog.rows import FileStat
from pixdex.indexer.decode import EXTENSIONS
from pixdex.indexer.files import remove_stale_temps
from pixdex.indexer.sidecars.naming import Siblings, siblings, sidecar_name_of
from pixdex.indexer.sidecars.state import sidecar_version


def is_image_name(name: bytes) -> bool:
    return os.path.splitext(name)[1].decode("ascii", "ignore").lower() in EXTENSIONS


IGNORE_MARKERS = (b".nomedia", b".pixdexignore")  # a folder holding one is not indexed, nor what is below


def excluded(path: bytes, exclude: list[str]) -> bool:
    """Whether a path matches one of the `library.exclude` globs."""
    text = os.fsdecode(path)
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in exclude)


def skipped_dir(name: bytes, skip: list[str]) -> bool:
    text = os.fsdecode(name)
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in skip)


def walk(root: bytes, skip: list[str], follow_symlinks: bool, errors: list[tuple[bytes, str]],
         visited: set[tuple[int, int]] | None = None, library: list[bytes] | None = None,
         recursive: bool = True, exclude: list[str] | None = None) -> Iterator[FileStat]:
    """Every image file under `root`, depth first; unreadable folders go to `errors`.

    Each folder is entered once by (device, inode), so a symlink loop (or a link to an ancestor)
    cannot multiply the tree. With `follow_symlinks`, a link is followed only when its target lies
    outside the `library` roots (real paths): what lies inside is indexed under its own path, once.
    Without it, links to folders and files are skipped. pixdex's own temp files left by a crash are
    removed on the way.
    """
    visited = set() if visited is None else visited
    library = library if library is not None else [os.path.realpath(root)]
    try:
        here = os.stat(root)
        entries = list(os.scandir(root))
    except OSError as exc:
        errors.append((root, f"cannot list folder: {exc.strerror or exc}"))
        return
    if (here.st_dev, here.st_ino) in visited:
        errors.append((root, "already scanned under another path (a symlink loop or a second link); skipped"))
        return
    visited.add((here.st_dev, here.st_ino))
    if any(e.name in IGNORE_MARKERS for e in entries):
        return
    remove_stale_temps(root, [e.name for e in entries])
    names = {e.name for e in entries}
    stems = siblings(names)
    for entry in sorted(entries, key=lambda e: e.name):
        name = os.fsdecode(entry.name)
        try:
            if entry.is_symlink() and not _follow(entry.path, follow_symlinks, library):
                continue
            if exclude and excluded(entry.path, exclude):
                continue
            if entry.is_dir():
                if recursive and not skipped_dir(entry.name, skip):
                    yield from walk(entry.path, skip, follow_symlinks, errors, visited, library, True, exclude)
            elif entry.is_file() and is_image_name(entry.name) and not name.startswith("."):
                yield FileStat.of(entry.path, entry.stat(), _side(root, entry.name, names, stems))
        except OSError as exc:
            errors.append((entry.path, f"cannot stat: {exc.strerror or exc}"))


def _side(root: bytes, image_name: bytes, names: set[bytes], stems: Siblings) -> str | None:
    """The version of an image's sidecar, None when it has none."""
    found = sidecar_name_of(image_name, names, stems)
    return None if found is None else sidecar_version(os.path.join(root, found))


def _follow(link: bytes, follow_symlinks: bool, library: list[bytes]) -> bool:
    """Follow a link only when asked to, and when its target neither lies in the library nor holds it."""
    if not follow_symlinks:
        return False
    target = os.path.realpath(link)
    return not below_any(target, library, itself=True) and not any(below_any(f, [target]) for f in library)


def normalize_roots(roots: list[bytes]) -> list[bytes]:
    """Real paths (symlinks resolved), without trailing slashes, and without roots nested in other roots."""
    real = sorted({os.path.realpath(r).rstrip(b"/") or b"/" for r in roots})
    kept: list[bytes] = []
    for root in real:
        if not any(root == k or root.startswith(k.rstrip(b"/") + b"/") for k in kept):
            kept.append(root)
    return kept


def below_any(path: bytes, folders: list[bytes], itself: bool = False) -> bool:
    return any(path.startswith(f.rstrip(b"/") + b"/") or (itself and path == f) for f in folders)
