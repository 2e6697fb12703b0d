"""Diff a folder tree against the catalog: what is new, changed, unchanged, moved or gone.

Only ``stat`` is read for files the catalog already knows with the same size and mtime, so a
second run over an unchanged tree opens no image. A file that appears while a known file of the
same size disappeared is hashed; equal content (or the same inode, size and mtime) makes it a
move, which keeps the catalog id and needs no inference.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.catalog.rows import FileStat, ImageRow
from pixdex.indexer.scan.moves import find_moves
from pixdex.indexer.scan.walk import below_any, normalize_roots, walk


@dataclass
class Diff:
    new: list[FileStat] = field(default_factory=list)
    changed: list[tuple[ImageRow, FileStat]] = field(default_factory=list)
    unchanged: list[ImageRow] = field(default_factory=list)
    stale: list[ImageRow] = field(default_factory=list)  # unchanged on disk, but pending or made by other models
    # failed before and unchanged since: not retried (unless it failed for want of permission and may be read now)
    failed: list[ImageRow] = field(default_factory=list)
    moved: list[tuple[ImageRow, FileStat]] = field(default_factory=list)
    removed: list[ImageRow] = field(default_factory=list)
    sidecar: list[ImageRow] = field(default_factory=list)  # the image is unchanged, its sidecar is not
    errors: list[tuple[bytes, str]] = field(default_factory=list)  # folders that could not be read


def diff_tree(catalog: Catalog, roots: list[bytes], skip: list[str], follow_symlinks: bool,
              model_ids: tuple[str, str | None], library: list[bytes] | None = None,
              shallow: Sequence[bytes] = (), exclude: list[str] | None = None,
              own: Mapping[bytes, str | None] | None = None, writing: Set[bytes] = frozenset(),
              own_images: Mapping[bytes, tuple[int, int]] | None = None, sidecars_written: bool = False) -> Diff:
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
            elif row.state == "failed" and _readable_again(row):
                diff.changed.append((row, st))  # a chmod changes no content, size or mtime: it is tried again
            elif row.state == "failed":
                diff.failed.append(row)
            elif not row.current_for(model_ids):
                diff.stale.append(row)
            else:
                diff.unchanged.append(row)
                not_own = st.path not in own or own[st.path] != st.side  # (a sidecar gone is None in both)
                side_changed = st.side != row.side and st.path not in writing and not_own
                owes = sidecars_written and st.side is None and row.side is None and _owes_sidecar(row)
                if side_changed or owes:
                    diff.sidecar.append(row)
    unreadable = [path for path, _ in diff.errors]
    gone = [row for row in known.values() if not below_any(row.path, unreadable)]
    elsewhere = _left_elsewhere(catalog, diff, seen | set(known))
    find_moves(diff, gone, catalog.queued_among([r.id for r in gone]) if gone else set(), elsewhere)
    return diff


def _left_elsewhere(catalog: Catalog, diff: Diff, scanned: Set[bytes]) -> list[ImageRow]:
    """Rows outside this scan whose file arrived in it: same inode, size and mtime, and no longer at the row's
    path. A move's two ends can be seen by two scans (the watcher's scan of one folder ran while the file
    crossed into it); the arrival keeps the row's id instead of becoming a new image beside a deleted one."""
    arrivals = [*diff.new, *(st for row, st in diff.changed if (row.dev, row.ino) != (st.dev, st.ino))]
    if not arrivals:
        return []
    keys = {(st.dev, st.ino, st.size, st.mtime_ns) for st in arrivals}
    return [row for row in catalog.with_inodes(st.ino for st in arrivals)
            if row.path not in scanned and (row.dev, row.ino, row.size, row.mtime_ns) in keys
            and not _holds(row.path, row.dev, row.ino)]


def _holds(path: bytes, dev: int, ino: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _readable_again(row: ImageRow) -> bool:
    """A file that failed because it could not be read (permissions) and can be now."""
    denied = row.reason is not None and ("Permission denied" in row.reason or "not permitted" in row.reason)
    return denied and os.access(row.path, os.R_OK)


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
    return below_any(parent, library, itself=True)


def _ordered_roots(roots: list[bytes], shallow: set[bytes]) -> list[bytes]:
    """Recursive roots without those inside another, then shallow ones no recursive root covers."""
    deep = normalize_roots([r for r in roots if os.path.realpath(r).rstrip(b"/") not in shallow])
    flat = sorted({s for s in shallow if not below_any(s, deep, itself=True)})
    return deep + flat
