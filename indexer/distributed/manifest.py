"""What a `pixdex index --ray` job made, in one Parquet file beside its log: a row per image — path, outcome and
reason, content hash, model ids, embedding, machine keywords — as the sidecars hold them (the job writes both from
the same values). The driver writes it with pyarrow's `ParquetWriter` as the rows come back, a row group per
`ROW_GROUP` rows, so a killed driver leaves the groups written so far readable.

    <data_dir>/ray-jobs/<YYYYmmdd-HHMMSS>/job.log           the settings, the summary, every failure
    <data_dir>/ray-jobs/<YYYYmmdd-HHMMSS>/manifest.parquet  the rows

`read_manifest` gives the rows back (a feeder for another engine, or a bulk fill of the catalog, reads them
without opening a sidecar).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pixdex.indexer.distributed.tasks import INDEXED

ROW_GROUP = 4096
SCHEMA = pa.schema([
    ("path", pa.binary()),  # the file's path as bytes (any name a filesystem holds)
    ("status", pa.string()),  # indexed, skipped (its sidecar was current) or failed
    ("reason", pa.string()),  # why it failed; "" otherwise
    ("digest", pa.string()),  # the content hash the embedding is of (the sidecar's EmbeddingOf)
    ("clip_model", pa.string()),  # the CLIP model id (the sidecar's EmbeddingModel); "" without an embedding
    ("keyword_model", pa.string()),  # the model id the machine keywords are by
    ("embedding", pa.list_(pa.float32())),  # null unless indexed by this job
    ("tags", pa.list_(pa.string())),  # the machine keywords written to the sidecar; null unless indexed
])


@dataclass(frozen=True)
class JobFiles:
    folder: Path

    @classmethod
    def new(cls, data_dir: Path) -> JobFiles:
        folder = data_dir / "ray-jobs" / time.strftime("%Y%m%d-%H%M%S")
        n = 2
        while folder.exists():
            folder = folder.with_name(f"{folder.name.split('.')[0]}.{n}")
            n += 1
        folder.mkdir(parents=True)
        return cls(folder)

    @property
    def log(self) -> Path:
        return self.folder / "job.log"

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.parquet"


class ManifestWriter:
    def __init__(self, path: Path, clip_id: str, keyword_id: str) -> None:
        self.path, self.clip_id, self.keyword_id = path, clip_id, keyword_id
        self._writer = pq.ParquetWriter(path, SCHEMA)
        self._rows: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}

    def add(self, row: dict[str, Any]) -> None:
        """One row as `tasks.write_batch` returns it."""
        indexed = str(row["status"]) == INDEXED
        values = (bytes(row["path"]), str(row["status"]), str(row["reason"]), str(row["digest"]),
                  self.clip_id if indexed else "", self.keyword_id if indexed else "",
                  np.frombuffer(bytes(row["embedding"]), dtype=np.float32).tolist() if indexed else None,
                  [str(t) for t in json.loads(str(row["tags"]))] if indexed else None)
        for name, value in zip(SCHEMA.names, values, strict=True):
            self._rows[name].append(value)
        if len(self._rows["path"]) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self._rows["path"]:
            self._writer.write_table(pa.table(self._rows, schema=SCHEMA))
            self._rows = {name: [] for name in SCHEMA.names}

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The manifest's rows (path as bytes, embedding as a float32 array or None)."""
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    for row in rows:
        if row["embedding"] is not None:
            row["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
    return rows


def write_log(path: Path, announced: list[str], summary: dict[str, Any]) -> None:
    """The job's log: what it was started with, its summary, and every failure (the console shows the first)."""
    lines = [*announced, json.dumps({k: v for k, v in summary.items() if k != "failures"}, ensure_ascii=False)]
    lines += [f"failed: {p}: {reason}" for p, reason in summary["failures"]]
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
