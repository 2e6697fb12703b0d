"""The model files as one value a cluster ships through its object store (`ModelBundle`), and their copy on each
node (`materialise`).

The driver reads the configured CLIP model's folder, the tagger's (if any) and the CLIP vocabulary's cached text
embeddings into a bundle; `ray.put` stores it once and Ray moves it to the nodes that run a model actor. Each
actor writes the files into a node-local folder named by the bundle's digest (temp folder + rename, so actors
starting together on one node never see half a model, and a second job with the same models reuses the copy).
The folders keep the models' names, so the model ids (name + fingerprint) are the driver's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from pixdex.indexer.errors import ModelError


@dataclass(frozen=True)
class ModelBundle:
    files: dict[str, bytes]  # relative path ("clip/<name>/visual/model.onnx", …) → content
    clip: str  # the CLIP model's folder, relative
    tagger: str | None  # the tagger's folder, relative; None without one
    vocabulary: str | None  # the vocabulary cache file, relative; None without vocabulary tags

    @property
    def digest(self) -> str:
        """Names the files and their content: the node-local folder's name."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()[:24]

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


def pack(clip_dir: Path, tagger_dir: Path | None, vocabulary: Path | None) -> ModelBundle:
    """Read the model folders (and the vocabulary cache) into a bundle. Raises ModelError naming an unreadable
    file."""
    files: dict[str, bytes] = {}
    clip = _add_folder(files, clip_dir, f"clip/{clip_dir.name}")
    tagger = _add_folder(files, tagger_dir, f"tagger/{tagger_dir.name}") if tagger_dir else None
    vocab = None
    if vocabulary is not None:
        vocab = f"vocabulary/{vocabulary.name}"
        files[vocab] = _read(vocabulary)
    return ModelBundle(files, clip, tagger, vocab)


def _add_folder(files: dict[str, bytes], folder: Path, prefix: str) -> str:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            files[f"{prefix}/{path.relative_to(folder).as_posix()}"] = _read(path)
    return prefix


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file for the cluster: {exc.strerror or exc}") from exc


def materialise(bundle: ModelBundle, root: Path) -> Path:
    """The bundle's files under `root/<digest>/`, written once per node (reused when already there)."""
    target = root / bundle.digest
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{bundle.digest}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for name, data in bundle.files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.rename(staging, target)
        except OSError:  # another actor on this node finished first: its copy is the same files
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def node_model_root() -> Path:
    """Where a node keeps the bundles it received: the worker's $XDG_CACHE_HOME (else ~/.cache)/pixdex/ray-models."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pixdex" / "ray-models"
