"""What libraries said while one file was handled, caught instead of reaching the terminal raw.

Pillow warns through Python's warnings; exiv2 and libtiff write to the process's stdout and stderr from C.
`Captured` takes both for the length of a block; the caller logs the text with the file's name, and adds
it to the reason when the file fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from types import TracebackType
from typing import IO, ClassVar


class Captured:
    """What libraries said while one file was handled: Python warnings (Pillow) and whatever C code
    wrote to stdout/stderr (exiv2, libtiff). It never reaches the terminal raw: the caller logs it
    with the file's name, and adds it to the reason when the file fails."""

    _shared: ClassVar[IO[bytes] | None] = None  # one temporary file per worker process, reused

    def __init__(self) -> None:
        self.text = ""

    def __enter__(self) -> Captured:
        if Captured._shared is None:
            Captured._shared = tempfile.TemporaryFile()
        sink = self._sink = Captured._shared
        sink.seek(0)
        sink.truncate()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._warnings.__exit__(kind, value, traceback)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self._sink.seek(0)
        said = self._sink.read(4000).decode("utf-8", "replace").strip()
        caught = [f"{w.category.__name__}: {w.message}" for w in self._caught]
        self.text = "; ".join(dict.fromkeys([*caught, *(line.strip() for line in said.splitlines() if line.strip())]))
