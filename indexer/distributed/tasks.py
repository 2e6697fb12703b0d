"""The job's stages as Ray Data runs them on a batch of rows — pixdex's own code inside each:

- `decode_batch` (CPU tasks): `prepare.prepare` reads, hashes, decodes and preprocesses each image; an image whose
  sidecar already carries the current models' results for this content is `skipped` (a re-run redoes nothing);
- `EmbedActor` (`actor.py`, a pool of stateful actors): the CLIP image tower, the tagger and the vocabulary tags;
- `write_batch` (CPU tasks): `sidecars.tasks.sync_sidecar` merges the keywords, the embedding and its content hash
  into each sidecar — the daemon's writer with all its guarantees (the person's keywords kept, atomic
  identity-keeping writes, refused when it cannot be faithful). A retried write merges the same values again:
  idempotent.

A batch is a dict of columns (Ray's "numpy" format). Every row leaves each stage with a `status` — `embed` (on its
way), `indexed`, `skipped` or `failed` with its `reason` — so a bad file is a row, never a stopped job.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import ray

from pixdex.indexer.errors import ReadError
from pixdex.indexer.paths import display_path
from pixdex.indexer.prepare import DecodeSpec, Prepared, prepare
from pixdex.indexer.sidecars.tasks import SidecarSpec, sync_sidecar

log = logging.getLogger(__name__)

Batch = dict[str, Any]  # column name → numpy array (object arrays for bytes and text)

EMBED, INDEXED, SKIPPED, FAILED = "embed", "indexed", "skipped", "failed"


def node_id() -> str:
    return str(ray.get_runtime_context().get_node_id())


def column(values: list[Any]) -> Any:
    """An object column: numpy would turn equal-length bytes into a fixed-width array and strip them."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def decode_batch(batch: Batch, spec: DecodeSpec) -> Batch:
    """Each image read, hashed, decoded and preprocessed (CPU); its failure, or `skipped` when its sidecar holds
    the current models' results for this content."""
    node = node_id()
    rows: dict[str, list[Any]] = {"path": [], "status": [], "reason": [], "digest": [], "clip": [], "tag": []}
    for path in batch["path"]:
        status, reason, digest, clip, tag = _decode_one(bytes(path), spec)
        for key, value in zip(rows, (bytes(path), status, reason, digest, clip, tag), strict=True):
            rows[key].append(value)
    out = {key: column(values) for key, values in rows.items()}
    out["decode_node"] = column([node] * len(rows["path"]))
    return out


def _decode_one(path: bytes, spec: DecodeSpec) -> tuple[str, str, str, bytes, bytes]:
    try:
        item = prepare(path, spec)
    except ReadError as exc:
        return FAILED, exc.reason, "", b"", b""
    except OSError as exc:  # vanished, unreadable, name too long: this file's failure
        return FAILED, f"cannot read file: {exc.strerror or exc}", "", b"", b""
    except Exception as exc:  # noqa: BLE001 - a hostile file must never stop the job: it becomes its failure
        log.warning("unexpected error decoding %s: %r", display_path(path), exc)
        return FAILED, f"unexpected {type(exc).__name__}: {exc}", "", b"", b""
    if item.from_sidecar:
        return SKIPPED, "its sidecar holds this model's results for this content", item.digest, b"", b""
    return EMBED, "", item.digest, _bytes_of(item, "clip"), _bytes_of(item, "tag")


def _bytes_of(item: Prepared, which: str) -> bytes:
    array = item.clip_input if which == "clip" else item.tag_input
    return b"" if array is None else np.ascontiguousarray(array, dtype=np.float32).tobytes()


def write_batch(batch: Batch, spec: SidecarSpec, clip_id: str) -> Batch:
    """Each embedded image's keywords, embedding and content hash merged into its sidecar; the rows' outcome."""
    node = node_id()
    status, reason = list(batch["status"]), list(batch["reason"])
    nodes = [[str(d), str(e)] for d, e in zip(batch["decode_node"], batch["embed_node"], strict=True)]
    for n, path in enumerate(batch["path"]):
        if status[n] != EMBED:
            continue
        vector = np.frombuffer(bytes(batch["embedding"][n]), dtype=np.float32)
        tags = [str(t) for t in json.loads(str(batch["tags"][n]))]
        side = sync_sidecar(bytes(path), tags, [], spec, (clip_id, str(batch["digest"][n]), vector))
        status[n], reason[n] = (FAILED, f"sidecar not written: {side.error}") if side.error else (INDEXED, "")
        nodes[n].append(node)
    return {"path": column([bytes(p) for p in batch["path"]]), "status": column([str(s) for s in status]),
            "reason": column([str(r) for r in reason]),
            "nodes": column([",".join(dict.fromkeys(n for n in ns if n)) for ns in nodes])}
