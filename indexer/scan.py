"""Diff a folder tree against the catalog: what is new, changed, unchanged, moved or gone.

Only ``stat`` is read for files the catalog already knows with the same size and mtime, so a
second run over an unchanged tree opens no image. A file that appears while a known file of the
same size disappeared is hashed; equal content (or the same inode, size and mtime) makes it a
move, which keeps the catalog id and needs no inference.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from pixdex.indexer.catalog import Catalog, FileStat, ImageRow
from pixdex.indexer.decode import EXTENSIONS
from pixdex.indexer.files import remove_stale_temps


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_file(path: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Diff:
    new: list[FileStat] = field(default_factory=list)
    changed: list[tuple[ImageRow, FileStat]] = field(default_factory=list)
    unchanged: list[ImageRow] = field(default_factory=list)
    stale: list[ImageRow] = field(default_factory=list)  # unchanged on disk, but pending or made by other models
    failed: list[ImageRow] = field(default_factory=list)  # failed before and unchanged since: not retried
    moved: list[tuple[ImageRow, FileStat]] = field(default_factory=list)
    removed: list[ImageRow] = field(default_factory=list)
    errors: list[tuple[bytes, str]] = field(default_factory=list)  # folders that could not be read


def is_image_name(name: bytes) -> bool:
    return os.path.splitext(name)[1].decode("ascii", "ignore").lower() in EXTENSIONS


def walk(root: bytes, skip: list[str], follow_symlinks: bool, errors: list[tuple[bytes, str]],
         visited: set[tuple[int, int]] | None = None) -> Iterator[FileStat]:
    """Every image file under `root`, depth first; unreadable folders go to `errors`.

    Each folder is entered once by (device, inode), so a symlink loop (or a link to an ancestor)
    cannot multiply the tree. pixdex's own temp files left by a crash are removed on the way.
    """
    visited = set() if visited is None else visited
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
    remove_stale_temps(root, [e.name for e in entries])
    for entry in sorted(entries, key=lambda e: e.name):
        name = os.fsdecode(entry.name)
        try:
            if entry.is_dir(follow_symlinks=follow_symlinks):
                if not any(fnmatch.fnmatchcase(name, pattern) for pattern in skip):
                    yield from walk(entry.path, skip, follow_symlinks, errors, visited)
            elif entry.is_file() and is_image_name(entry.name) and not name.startswith("."):
                yield FileStat.of(entry.path, entry.stat())
        except OSError as exc:
            errors.append((entry.path, f"cannot stat: {exc.strerror or exc}"))


def normalize_roots(roots: list[bytes]) -> list[bytes]:
    """Absolute, without trailing slashes, and without roots nested in other roots."""
    absolute = sorted({os.path.abspath(r).rstrip(b"/") or b"/" for r in roots})
    kept: list[bytes] = []
    for root in absolute:
        if not any(root == k or root.startswith(k.rstrip(b"/") + b"/") for k in kept):
            kept.append(root)
    return kept


def diff_tree(catalog: Catalog, roots: list[bytes], skip: list[str], follow_symlinks: bool,
              model_ids: tuple[str, str | None]) -> Diff:
    diff = Diff()
    known: dict[bytes, ImageRow] = {}
    visited: set[tuple[int, int]] = set()
    for root in normalize_roots(roots):
        known.update((row.path, row) for row in catalog.under(root))
        if not os.path.isdir(root):
            diff.errors.append((root, "not a folder (missing, or a file)"))
            continue
        for st in walk(root, skip, follow_symlinks, diff.errors, visited):
            row = known.pop(st.path, None)
            if row is None:
                diff.new.append(st)
            elif not row.same_file(st):
                diff.changed.append((row, st))
            elif row.state == "failed":
                diff.failed.append(row)
            elif row.state == "pending" or (row.clip_model, row.tagger_model) != model_ids:
                diff.stale.append(row)
            else:
                diff.unchanged.append(row)
    unreadable = [path for path, _ in diff.errors]
    gone = [row for row in known.values() if not _below_any(row.path, unreadable)]
    _find_moves(diff, gone)
    return diff


def _below_any(path: bytes, folders: list[bytes]) -> bool:
    return any(path.startswith(f.rstrip(b"/") + b"/") for f in folders)


def _find_moves(diff: Diff, gone: list[ImageRow]) -> None:
    remaining = {r.id: r for r in gone}
    by_inode = {(r.dev, r.ino, r.size, r.mtime_ns): r.id for r in gone}
    sizes = {r.size for r in gone if r.hash}
    still_new: list[FileStat] = []
    for st in diff.new:
        match = by_inode.get((st.dev, st.ino, st.size, st.mtime_ns))
        if match not in remaining and st.size in sizes:
            digest = _try_hash(st.path)
            match = next((i for i, r in remaining.items() if r.size == st.size and r.hash == digest), None)
        if match is not None and match in remaining:
            diff.moved.append((remaining.pop(match), st))
        else:
            still_new.append(st)
    diff.new = still_new
    diff.removed = list(remaining.values())


def _try_hash(path: bytes) -> str | None:
    try:
        return hash_file(path)
    except OSError:
        return None

