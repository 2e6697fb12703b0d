"""Typed errors of the indexer: each carries the path (or model) and a reason a person can act on."""

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


class PixdexError(Exception):
    """Base of every error pixdex reports to a person instead of a traceback."""


class ReadError(PixdexError):
    """An image that cannot be read or decoded."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[Path | str, str]]:  # crosses process boundaries intact
        return type(self), (self.path, self.reason)


class SidecarError(PixdexError):
    """An XMP sidecar that cannot be read, merged or written."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[Path | str, str]]:  # crosses process boundaries intact
        return type(self), (self.path, self.reason)


class ModelError(PixdexError):
    """A model that is missing, incomplete or cannot be loaded: stops work, blames no file."""


class InferenceError(PixdexError):
    """A model that loaded but failed on a batch (ONNX Runtime's own exceptions become this)."""


class CatalogError(PixdexError):
    """A catalog that cannot be opened or used as it is (newer schema, not a database)."""
