"""Paths and arguments as text a person reads: bytes that are not UTF-8 are shown (``caf\\xe9``), never lost.

A light module: the command line's client path imports it.
"""

from __future__ import annotations

import os
from pathlib import Path


def display_path(path: Path | str | bytes) -> str:
    """A path as text for messages, even when its bytes are not valid UTF-8."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


def as_text(text: str) -> str:
    """An argument as text that can be sent and searched: bytes that are not UTF-8 (which Python carries
    as lone surrogates, `caf\udce9`) shown as pixdex shows them in paths (`caf\\xe9`)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no byte stands for
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# The kernel's and the system's own trees: never a photo folder, and a scan of them reads pseudo-files by the
# thousand (a trial watched "/" and walked /proc). Removable drives mounted under /run/media stay allowed.
SYSTEM_TREES = (b"/proc", b"/sys", b"/dev", b"/run")
MOUNT_TREES = (b"/run/media", b"/run/mount")


def system_folder(real: bytes) -> str | None:
    """Why `real` (a real path) cannot be a watched folder, or None when it can."""
    def within(trees: tuple[bytes, ...]) -> bool:
        return any(real == t or real.startswith(t + b"/") for t in trees)

    if real.rstrip(b"/") == b"":
        return "the whole file system is not a photo folder; give the folders that hold pictures, e.g. ~/Pictures"
    if within(SYSTEM_TREES) and not (within(MOUNT_TREES) and real not in MOUNT_TREES):
        return "a system folder, not a photo folder; give the folders that hold pictures, e.g. ~/Pictures"
    return None
