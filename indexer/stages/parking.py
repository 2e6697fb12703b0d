"""Files that vanished from their path while queued, or left it after they were read: their entries stay queued
(`park`), not fed again while their path is still the one that vanished (`waiting`), for `grace` seconds — the
daemon's scanner registers the move meanwhile, and the entry is then fed at its new path. Past that, a second
vanish is the file's failure. One whose library folder is gone as a whole (an unmounted disk) waits until it is
back, as its row does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from pixdex.indexer.paths import display_path

log = logging.getLogger(__name__)
UNMOUNTED_LOOK = 5.0  # seconds between looks for the folder of a parked file whose library folder is gone


class Parking:
    def __init__(self) -> None:
        self.grace = 0.0  # seconds; 0 (`pixdex index`): a vanished file fails at once
        self.library: Callable[[], list[bytes]] = list  # the watched folders (real paths)
        self._lock = threading.Lock()
        self._parked: dict[int, tuple[bytes, float]] = {}  # id → (the path that vanished, until when)
        self._second_try: set[int] = set()

    def waiting(self, paths: Callable[[list[int]], dict[int, bytes]]) -> set[int]:
        """Parked ids still at the path that vanished, within their grace (`paths`: the catalog's current path of
        each id). One whose path changed (the scanner registered its move) or whose grace ran out is fed again:
        a second vanish past the grace is its failure."""
        with self._lock:
            if not self._parked:
                return set()
            now = time.monotonic()
            found = paths(list(self._parked))
            waiting = set()
            for image_id, (path, until) in list(self._parked.items()):
                if found.get(image_id) == path and (now < until or not self._root_there(path)):
                    waiting.add(image_id)
                    continue
                del self._parked[image_id]
                if image_id in found and found[image_id] == path:
                    self._second_try.add(image_id)
            return waiting

    def next_look(self) -> float | None:
        """Seconds until a parked entry's grace ends (None: nothing parked). One whose folder is gone is looked
        at again every `UNMOUNTED_LOOK` seconds."""
        with self._lock:
            if not self._parked:
                return None
            now = time.monotonic()
            return max(0.05, min(min(until for _, until in self._parked.values()) - now, UNMOUNTED_LOOK))

    def park(self, image_id: int, path: bytes) -> bool:
        """Keep the entry of a file that vanished from `path` (or moved after it was read) queued for a while,
        instead of failing it or committing what was read at a path it left. False: not parked (no grace, or
        its second try)."""
        with self._lock:
            if self.grace <= 0 or image_id in self._second_try:
                self._second_try.discard(image_id)
                return False
            self._parked[image_id] = (path, time.monotonic() + self.grace)
        if not self._root_there(path):
            log.info("%s waits for its folder to come back (unmounted?)", display_path(path))
        log.debug("%s left its path while being indexed; waiting for the scanner to find where it went",
                  display_path(path))
        return True

    def done(self, image_id: int) -> None:
        """The entry's result goes to the writer: it is no longer on a second try."""
        with self._lock:
            self._second_try.discard(image_id)

    def _root_there(self, path: bytes) -> bool:
        """Whether the watched folder `path` lies in is there (not an unmounted disk)."""
        roots = [r for r in self.library() if path.startswith(r.rstrip(b"/") + b"/")]
        return not roots or any(os.path.isdir(r) for r in roots)
