"""Moves: which rows that left their path arrived at another — matched by inode, else by content — so a moved
file keeps its catalog id and needs no inference; and which indexed paths now hold another file.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import TYPE_CHECKING

from pixdex.indexer.catalog.rows import FileStat, ImageRow
from pixdex.indexer.digest import hash_file

if TYPE_CHECKING:
    from pixdex.indexer.scan.diff import Diff


def find_moves(diff: Diff, gone: list[ImageRow], queued: Set[int] = frozenset(),
               elsewhere: Sequence[ImageRow] = ()) -> None:
    """Find known rows among the files that arrived: new paths, and indexed paths that now hold another
    file (`mv a.jpg b.jpg` over an indexed b.jpg). A gone row is matched by inode, else by content; a row
    whose path now holds another file, by inode. A gone row that is `queued` (its file changed, or is
    being indexed, since the catalog recorded its stat) is matched by its inode alone: changed, then moved.
    A row that arrives on an indexed path takes it over: the row that was there is removed, unless it moved
    elsewhere too (then its path holds a new file). Rows `elsewhere` (outside this scan, their file no longer at
    their path) are matched by inode too, and stay when nothing here matches them."""
    replaced = [(row, st) for row, st in diff.changed if (row.dev, row.ino) != (st.dev, st.ino)]
    candidates = {r.id: r for r in [*elsewhere, *gone, *(row for row, _ in replaced)]}
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
