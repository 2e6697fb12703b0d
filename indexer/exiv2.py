"""pyexiv2, one caller at a time.

pyexiv2 keeps global state (registered namespaces, one error buffer) and never releases the GIL, so
every call goes through `LOCK`, in worker processes only (never in the serving process). The log level
is 3: level 4 would hide corrupt XML, which pixdex would then overwrite.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pyexiv2

from pixdex.indexer.sidecars.keys import PIXDEX_NS

LOCK = threading.Lock()
_ready = False


def setup() -> None:
    """Once per process, under `LOCK`: the log level, and pixdex's namespace."""
    global _ready
    if not _ready:
        pyexiv2.set_log_level(3)
        pyexiv2.registerNs(PIXDEX_NS, "pixdex")
        _ready = True


@contextmanager
def exiv2() -> Iterator[ModuleType]:
    """pyexiv2, set up, while this caller holds it alone."""
    with LOCK:
        setup()
        yield pyexiv2
