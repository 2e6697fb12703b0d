"""The WD14-style tagger: ``model.onnx`` + ``selected_tags.csv`` in one directory.

    <model_dir>/tagger/<name>/model.onnx          input: float32 (N, S, S, 3), BGR, 0–255
    <model_dir>/tagger/<name>/selected_tags.csv   tag_id,name,category,count (9 rating, 0 general, 4 character)

Output is one sigmoid confidence per row of the CSV. Thresholds, the exclude list and the tag
cap come from the config; ratings are not stored as tags.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pixdex.indexer.embedder import check_files
from pixdex.indexer.errors import ModelError
from pixdex.indexer.layout import STANDIN_MARKER, TAGGER_FILES
from pixdex.indexer.modelcache import ModelCache
from pixdex.indexer.preprocess import wd14_preprocess
from pixdex.indexer.sections import Runtime, TaggerSettings
from pixdex.indexer.session import OnnxSession, fingerprint

GENERAL, CHARACTER, RATING = 0, 4, 9


@dataclass(frozen=True)
class Tag:
    name: str
    confidence: float
    category: str  # "general" or "character"


def mcut(scores: NDArray[np.float32]) -> float:
    """Maximum Cut Thresholding (Largeron et al., 2012): the midpoint of the widest gap between the sorted
    scores, so the tags kept are the group that stands apart from the rest."""
    if len(scores) < 2:
        return 1.0
    ordered = np.sort(scores)[::-1]
    gap = int(np.argmax(ordered[:-1] - ordered[1:]))
    return float(ordered[gap] + ordered[gap + 1]) / 2


def display_name(raw: str) -> str:
    """WD14 names use underscores for spaces; kaomoji such as ``^_^`` keep theirs."""
    return raw.replace("_", " ") if re.search(r"[^\W\d_]{2}", raw) else raw


class Tagger:
    def __init__(self, directory: Path, settings: TaggerSettings, threads: int = 0,
                 cache: ModelCache | None = None, runtime: Runtime = Runtime()) -> None:
        check_files(directory, TAGGER_FILES, "tagger")
        self.directory = directory
        self.name = directory.name
        self.settings = settings
        self.session = OnnxSession(directory / "model.onnx", threads, cache, runtime)
        self.names, self.categories = self._read_tags(directory / "selected_tags.csv")
        self.standin = (directory / STANDIN_MARKER).exists()

    @staticmethod
    def _read_tags(path: Path) -> tuple[list[str], NDArray[np.int64]]:
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
            names = [display_name(r["name"]) for r in rows]
            categories = np.array([int(r["category"]) for r in rows], dtype=np.int64)
        except (OSError, KeyError, ValueError, csv.Error) as exc:
            raise ModelError(f"{path}: not a selected_tags.csv with name and category columns: {exc}") from exc
        if not names:
            raise ModelError(f"{path}: lists no tags")
        return names, categories

    @cached_property
    def id(self) -> str:
        return f"{self.name}@{fingerprint(self.session.path, self.directory / 'selected_tags.csv')}"

    @cached_property
    def image_size(self) -> int:
        height = self.session.input.shape[1]
        return height if isinstance(height, int) and height > 0 else 448

    def preprocess(self, image: Image.Image) -> NDArray[np.float32]:
        return wd14_preprocess(image, self.image_size)

    @cached_property
    def _excluded(self) -> frozenset[str]:
        return frozenset(display_name(t) for t in self.settings.exclude) | frozenset(self.settings.exclude)

    def tag(self, batch: NDArray[np.float32]) -> list[list[Tag]]:
        probs = self.session.run(batch)
        if probs.shape[1] != len(self.names):
            raise ModelError(f"{self.session.path}: outputs {probs.shape[1]} scores but selected_tags.csv "
                             f"lists {len(self.names)} tags")
        return [self._select(row) for row in probs]

    def _select(self, probs: NDArray[np.float32]) -> list[Tag]:
        s = self.settings
        general, character = s.general_threshold, s.character_threshold
        if s.mcut:
            general = mcut(probs[self.categories == GENERAL])
            character = max(0.15, mcut(probs[self.categories == CHARACTER]))  # few characters: keep a floor
        keep = ((self.categories == GENERAL) & (probs >= general)) | \
               ((self.categories == CHARACTER) & (probs >= character))
        order = [i for i in np.argsort(-probs) if keep[i] and self.names[i] not in self._excluded]
        return [Tag(self.names[i], round(float(probs[i]), 4),
                    "character" if self.categories[i] == CHARACTER else "general")
                for i in order[: s.max_tags]]
