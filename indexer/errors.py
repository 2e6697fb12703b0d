"""Typed errors of the indexer: each carries the path (or model) and a reason a person can act on."""

from __future__ import annotations

from pathlib import Path

from pixdex.indexer.paths import display_path


class PixdexError(Exception):
    """Base of every error pixdex reports to a person instead of a traceback."""


class PathError(PixdexError):
    """A file's failure: its path and the reason, intact across process boundaries."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[Path | str, str]]:  # pickled as it was made, subclass and all
        return type(self), (self.path, self.reason)


class ReadError(PathError):
    """An image that cannot be read or decoded."""


class SidecarError(PathError):
    """An XMP sidecar that cannot be read, merged or written."""


class ModelError(PixdexError):
    """A model that is missing, incomplete or cannot be loaded: stops work, blames no file."""


class ModelMissing(ModelError):
    """A model whose files are not there (or not all): what reduced mode usually stands in for."""


class InferenceError(PixdexError):
    """A model that loaded but failed on a batch (ONNX Runtime's own exceptions become this)."""


class CatalogError(PixdexError):
    """A catalog that cannot be opened or used as it is (newer schema, not a database)."""
