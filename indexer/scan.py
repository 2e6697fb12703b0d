"""Diff a folder tree against the catalog: what is new, changed, unchanged, moved or gone.

Only ``stat`` is read for files the catalog already knows with the same size and mtime, so a
second run over an unchanged tree opens no image. A file that appears while a known file of the
same size disappeared is hashed; equal content (or the same inode, size and mtime) makes it a
move, which keeps the catalog id and needs no inference.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import FileStat, ImageRow
from pixdex.indexer.decode import EXTENSIONS
from pixdex.indexer.digest import hash_file
from pixdex.indexer.files import remove_stale_temps
from pixdex.indexer.sidecars.naming import Siblings, is_raw_name, is_sidecar_name, sidecar_name_of, siblings  # noqa: F401 - the watcher's (until scan/ names them)
from pixdex.indexer.sidecars.state import sidecar_version


@dataclass
class Diff:
    new: list[FileStat] = field(default_factory=list)
    changed: list[tuple[ImageRow, FileStat]] = field(default_factory=list)
    unchanged: list[ImageRow] = field(default_factory=list)
    stale: list[ImageRow] = field(default_factory=list)  # unchanged on disk, but pending or made by other models
    failed: list[ImageRow] = field(default_factory=list)  # failed before and unchanged since: not retried
    moved: list[tuple[ImageRow, FileStat]] = field(default_factory=list)
    removed: list[ImageRow] = field(default_factory=list)
    sidecar: list[ImageRow] = field(default_factory=list)  # the image is unchanged, its sidecar is not
    errors: list[tuple[bytes, str]] = field(default_factory=list)  # folders that could not be read


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
    return not _below_any(target, library, itself=True) and not any(_below_any(f, [target]) for f in library)


def normalize_roots(roots: list[bytes]) -> list[bytes]:
    """Real paths (symlinks resolved), without trailing slashes, and without roots nested in other roots."""
    real = sorted({os.path.realpath(r).rstrip(b"/") or b"/" for r in roots})
    kept: list[bytes] = []
    for root in real:
        if not any(root == k or root.startswith(k.rstrip(b"/") + b"/") for k in kept):
            kept.append(root)
    return kept


def diff_tree(catalog: Catalog, roots: list[bytes], skip: list[str], follow_symlinks: bool,
              model_ids: tuple[str, str | None], library: list[bytes] | None = None,
              shallow: list[bytes] = (), exclude: list[str] | None = None,  # type: ignore[assignment]
              own: dict[bytes, str | None] | None = None, writing: set[bytes] = frozenset(),  # type: ignore[assignment]
              own_images: dict[bytes, tuple[int, int]] | None = None, sidecars_written: bool = False) -> Diff:
    """Diff the trees under `roots` against the catalog. `library` (default: the roots) are all the
    folders pixdex indexes; links into them are not followed, their files have their own paths.

    The watcher passes the folders it saw change instead of whole roots: `shallow` ones are diffed
    without their subfolders, and a changed folder that is gone (deleted, or moved out, with or without
    the folders above it) while a folder above it in the library is still there had everything below it
    removed — or moved, when its files arrive elsewhere. A root that is gone is an error and its rows stay:
    an unmounted disk is not a deletion.

    An indexed image whose sidecar changed (appeared, edited, removed) goes to `sidecar`, unless the
    version found is one pixdex just wrote itself (`own`: image path → the sidecar version written), or
    pixdex is writing it right now (`writing`: its worker merges whatever is there, and a person's edit
    that lands after pixdex's rename is caught by the pipeline's look after the write). With
    `sidecars_written`, an image the models tagged whose sidecar was never written (a crash, a move at the
    wrong moment) goes there too: its turn writes it.
    """
    own, own_images = own or {}, own_images or {}
    diff = Diff()
    library = normalize_roots(list(roots) + list(library or []))
    shallow_set = {os.path.realpath(s).rstrip(b"/") for s in shallow}
    known: dict[bytes, ImageRow] = {}
    visited: set[tuple[int, int]] = set()
    seen: set[bytes] = set()
    # Rows stored under a root's unresolved path (before paths were resolved) are found and moved.
    for alias in {os.path.abspath(r).rstrip(b"/") or b"/" for r in roots} - set(normalize_roots(roots)):
        known.update((row.path, row) for row in catalog.under(alias))
    for root in _ordered_roots(roots, shallow_set):
        recursive = root not in shallow_set
        known.update((row.path, row) for row in catalog.under(root)
                     if recursive or os.path.dirname(row.path) == root)
        if not os.path.isdir(root):
            if root in library or os.path.lexists(root) or not _gone_from_library(root, library):
                diff.errors.append((root, "not a folder (missing, or a file)"))
            continue
        for st in walk(root, skip, follow_symlinks, diff.errors, visited, library, recursive, exclude):
            if st.path in seen:
                continue
            seen.add(st.path)
            row = known.pop(st.path, None)
            if row is None:
                diff.new.append(st)
            elif not row.same_file(st) and own_images.get(st.path) != (st.size, st.mtime_ns):
                diff.changed.append((row, st))
            elif not row.same_file(st):
                diff.unchanged.append(row)  # pixdex wrote the image's XMP itself; the writer records its stat
            elif row.state == "failed":
                diff.failed.append(row)
            elif not row.current_for(model_ids):
                diff.stale.append(row)
            else:
                diff.unchanged.append(row)
                if st.side != row.side and st.path not in writing and (st.path not in own or own[st.path] != st.side):
                    diff.sidecar.append(row)
                elif sidecars_written and st.side is None and row.side is None and _owes_sidecar(row):
                    diff.sidecar.append(row)
    unreadable = [path for path, _ in diff.errors]
    gone = [row for row in known.values() if not _below_any(row.path, unreadable)]
    _find_moves(diff, gone, catalog.queued_among([r.id for r in gone]) if gone else set())
    return diff


def _owes_sidecar(row: ImageRow) -> bool:
    """Tagged by the models, with no sidecar error recorded: pixdex writes a sidecar for it."""
    return row.clip_model is not None and row.sidecar_error is None and bool(row.machine_tags)


def _gone_from_library(folder: bytes, library: list[bytes]) -> bool:
    """Whether a folder that is not there was deleted or moved away: the nearest folder above it that is
    still there is in the library (`mv trip voyage` takes trip/sub along; an unmounted disk leaves only
    folders above its library root)."""
    parent = os.path.dirname(folder)
    while parent != os.path.dirname(parent) and not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    return _below_any(parent, library, itself=True)


def _ordered_roots(roots: list[bytes], shallow: set[bytes]) -> list[bytes]:
    """Recursive roots without those inside another, then shallow ones no recursive root covers."""
    deep = normalize_roots([r for r in roots if os.path.realpath(r).rstrip(b"/") not in shallow])
    flat = sorted({s for s in shallow if not _below_any(s, deep, itself=True)})
    return deep + flat


def _below_any(path: bytes, folders: list[bytes], itself: bool = False) -> bool:
    return any(path.startswith(f.rstrip(b"/") + b"/") or (itself and path == f) for f in folders)


def _find_moves(diff: Diff, gone: list[ImageRow], queued: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Find known rows among the files that arrived: new paths, and indexed paths that now hold another
    file (`mv a.jpg b.jpg` over an indexed b.jpg). A gone row is matched by inode, else by content; a row
    whose path now holds another file, by inode. A gone row that is `queued` (its file changed, or is
    being indexed, since the catalog recorded its stat) is matched by its inode alone: changed, then moved.
    A row that arrives on an indexed path takes it over: the row that was there is removed, unless it moved
    elsewhere too (then its path holds a new file)."""
    replaced = [(row, st) for row, st in diff.changed if (row.dev, row.ino) != (st.dev, st.ino)]
    candidates = {r.id: r for r in [*gone, *(row for row, _ in replaced)]}
    by_inode = {(r.dev, r.ino, r.size, r.mtime_ns): r.id for r in candidates.values()}
    by_bare_inode = {(r.dev, r.ino): r.id for r in gone if r.id in queued}
    sizes = {r.size for r in gone if r.hash}
    moved: dict[int, FileStat] = {}

    def arrival(st: FileStat, occupant: ImageRow | None) -> bool:
        found = by_inode.get((st.dev, st.ino, st.size, st.mtime_ns))
        if found is None and occupant is None:
            found = by_bare_inode.get((st.dev, st.ino))
        if found is None and occupant is None and st.size in sizes:
            digest = _try_hash(st.path)
            found = next((r.id for r in gone if r.id not in moved and r.size == st.size and r.hash == digest), None)
        if found is None or found in moved or (occupant is not None and found == occupant.id):
            return False
        moved[found] = st
        return True

    arrived_new = [st for st in diff.new if arrival(st, None)]
    taken_over = [row for row, st in replaced if arrival(st, row)]
    diff.moved = [(candidates[i], st) for i, st in moved.items()]
    arrived_paths = {id(st) for st in arrived_new}
    diff.new = [st for st in diff.new if id(st) not in arrived_paths]
    # The path of a row that moved away holds a new file, unless another row arrived on it.
    taken_ids = {row.id for row in taken_over}
    diff.new += [st for row, st in replaced if row.id in moved and row.id not in taken_ids]
    diff.changed = [(row, st) for row, st in diff.changed if row.id not in moved and row.id not in taken_ids]
    diff.removed = [r for r in gone if r.id not in moved] + [r for r in taken_over if r.id not in moved]


def _try_hash(path: bytes) -> str | None:
    try:
        return hash_file(path)
    except OSError:
        return None

