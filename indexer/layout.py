"""The data directory's layout: the one place that knows where each store lives.

    <data_dir>/catalog.sqlite3        SQLite catalog (+ -wal, -shm): the source of truth
    <data_dir>/vectors/vectors.usearch  usearch HNSW file: a cache of the catalog's embeddings
    <data_dir>/vectors/vectors.json     its manifest (model, dimension, metric, dtype, generation)
    <data_dir>/vectors/next/            the same for a new CLIP model while it re-embeds the library
    <data_dir>/fulltext/                tantivy index; fulltext/pixdex.json is its manifest
    <data_dir>/index.lock               held (flock) by the one process that writes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The files a model directory must hold (`pixdex models` and `status` check them without loading onnxruntime).
CLIP_FILES = ("config.json", "visual/model.onnx", "visual/preprocess_cfg.json",
              "textual/model.onnx", "textual/tokenizer.json")
TAGGER_FILES = ("model.onnx", "selected_tags.csv")
STANDIN_MARKER = "STANDIN.txt"  # written beside a stand-in model's files: its results mean nothing


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.sqlite3"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors"

    @property
    def vector_file(self) -> Path:
        return self.vectors / "vectors.usearch"

    @property
    def vector_manifest(self) -> Path:
        return self.vectors / "vectors.json"

    @property
    def next_vectors(self) -> Path:
        return self.vectors / "next"

    def vector_files(self, building: bool = False) -> tuple[Path, Path]:
        """(usearch file, manifest) of the live model's vectors, or of the model being built."""
        folder = self.next_vectors if building else self.vectors
        return folder / "vectors.usearch", folder / "vectors.json"

    @property
    def fulltext(self) -> Path:
        return self.root / "fulltext"

    @property
    def fulltext_manifest(self) -> Path:
        return self.fulltext / "pixdex.json"

    @property
    def lock(self) -> Path:
        return self.root / "index.lock"

    def exists(self) -> bool:
        """Whether anything was ever indexed here (readers create nothing when not)."""
        return self.catalog.is_file()

    def catalog_files(self) -> list[Path]:
        return [p for p in (self.catalog, self.root / "catalog.sqlite3-wal", self.root / "catalog.sqlite3-shm")
                if p.exists()]
