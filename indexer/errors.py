"""Typed errors of the indexer: each carries the path (or model) and a reason a person can act on."""

from __future__ import annotations

import os
from pathlib import Path


def display_path(path: Path | str | bytes) -> str:
    """A path as text for messages, even when its bytes are not valid UTF-8."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


class PixdexError(Exception):
    """Base of every error pixdex reports to a person instead of a traceback."""


class ReadError(PixdexError):
    """An image that cannot be read or decoded."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = path
        self.reason = reason


class SidecarError(PixdexError):
    """An XMP sidecar that cannot be read, merged or written."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = path
        self.reason = reason


class ModelError(PixdexError):
    """A model directory that is missing, incomplete or inconsistent."""
