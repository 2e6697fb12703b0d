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
