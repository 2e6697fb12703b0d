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

A batch's decodes, and its sidecar writes, run in a Ray task of their own on the batch task's node (`one_task_each`):
a file that crashes its decoder (a segfault in a C library, not a Python exception) kills that task's worker
process, not the batch task. Then each file of the batch runs in a task of its own: Ray runs a file's task again
`SOLO_RETRIES` times (a node lost meanwhile costs a retry, not the file), then the file is `failed` with the reason,
and its batch goes on — as the local pipeline blames the file whose decode pool worker died. The batch tasks
themselves keep Ray Data's retries (a lost node's batches run again elsewhere).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pixdex.indexer.errors import ReadError
from pixdex.indexer.paths import display_path
from pixdex.indexer.prepare import DecodeSpec, Prepared, prepare
from pixdex.indexer.sidecars.tasks import SidecarSpec, sync_sidecar

log = logging.getLogger(__name__)

Batch = dict[str, Any]  # column name → numpy array (object arrays for bytes and text)

EMBED, INDEXED, SKIPPED, FAILED = "embed", "indexed", "skipped", "failed"
SOLO_RETRIES = 2  # a file's own task whose worker process died is run again this many times before the file is blamed


@dataclass(frozen=True)
class Died:
    """A file's own task that never came back: its worker process died each time Ray ran it."""

    reason: str


def one_task_each(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], what: str) -> list[Any]:
    """`fn(*call)` for each call: all of them in one Ray task on this node; when that task's worker process dies
    (or it raises), each call in a task of its own (on this node, elsewhere if it is gone), one after the other, to
    find the file: `Died` for a call whose worker process died `SOLO_RETRIES + 1` times. `what` names the process in
    the reason ("decoder", "sidecar writer"). A task per file costs ~35 ms here (docs/BENCHMARKS.md): only a batch
    with a crash pays it.

    The tasks ask for no CPU: they run in their batch task's stead, which holds the CPU (Ray Data counts the batch
    tasks against the cluster) and waits meanwhile — one file at a time, as the batch task would have decoded it."""
    here = NodeAffinitySchedulingStrategy(node_id(), soft=True)
    whole = ray.remote(num_cpus=0, max_retries=0, retry_exceptions=False)(_each)
    try:
        done: list[Any] = ray.get(whole.options(scheduling_strategy=here, name=f"pixdex {what}").remote(fn, calls))
        return done
    except ray.exceptions.RayError as exc:  # a file crashed it (or its node went): one task a file finds which
        log.warning("a %s task for %d files died (%s); running each file in a task of its own", what, len(calls),
                    _first_line(exc))
    task = ray.remote(num_cpus=0, max_retries=SOLO_RETRIES, retry_exceptions=False)(fn)
    out: list[Any] = []
    for call in calls:
        try:
            out.append(ray.get(task.options(scheduling_strategy=here, name=f"pixdex {what}").remote(*call)))
        except ray.exceptions.RayTaskError as exc:  # an exception `fn` let through (never retried)
            out.append(Died(f"unexpected error in the {what}: {_first_line(exc.cause or exc)}"))
        except ray.exceptions.RayError as exc:  # the worker died (a crash, its memory, its node): every try
            out.append(Died(f"the {what} process died on this file each of the {SOLO_RETRIES + 1} times it ran "
                            f"({type(exc).__name__}: {_first_line(exc)})"))
    return out


def _each(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [fn(*call) for call in calls]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
    paths = [bytes(p) for p in batch["path"]]
    rows: dict[str, list[Any]] = {"path": [], "status": [], "reason": [], "digest": [], "clip": [], "tag": []}
    for path, done in zip(paths, one_task_each(_decode_one, [(p, spec) for p in paths], "decoder"), strict=True):
        status, reason, digest, clip, tag = (FAILED, done.reason, "", b"", b"") if isinstance(done, Died) else done
        for key, value in zip(rows, (path, status, reason, digest, clip, tag), strict=True):
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
    todo = [n for n in range(len(status)) if status[n] == EMBED]
    calls = [(bytes(batch["path"][n]), [str(t) for t in json.loads(str(batch["tags"][n]))], spec,
              (clip_id, str(batch["digest"][n]), np.frombuffer(bytes(batch["embedding"][n]), dtype=np.float32)))
             for n in todo]
    for n, error in zip(todo, one_task_each(_write_one, calls, "sidecar writer"), strict=True):
        reason[n] = error.reason if isinstance(error, Died) else f"sidecar not written: {error}" if error else ""
        status[n] = FAILED if reason[n] else INDEXED
        nodes[n].append(node)
    return {"path": column([bytes(p) for p in batch["path"]]), "status": column([str(s) for s in status]),
            "reason": column([str(r) for r in reason]),
            "nodes": column([",".join(dict.fromkeys(n for n in ns if n)) for ns in nodes]),
            "digest": column([str(d) for d in batch["digest"]]),  # and what was written, for the manifest
            "embedding": column([bytes(e) for e in batch["embedding"]]),
            "tags": column([str(t) for t in batch["tags"]])}


def _write_one(path: bytes, tags: list[str], spec: SidecarSpec, embedding: tuple[str, str, Any]) -> str | None:
    """The keywords, embedding and content hash merged into one image's sidecar; why not, if it could not be."""
    return sync_sidecar(path, tags, [], spec, embedding).error
