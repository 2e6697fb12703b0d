"""The CLIP model: image tower, text tower and tokenizer from one model directory.

The directory layout is Immich's, so its published exports drop in unchanged:

    <model_dir>/clip/<name>/config.json                 open_clip model config (embed_dim, text_cfg)
    <model_dir>/clip/<name>/visual/model.onnx           input "image": float32 (N, 3, S, S)
    <model_dir>/clip/<name>/visual/preprocess_cfg.json  size, mean, std, interpolation, resize_mode
    <model_dir>/clip/<name>/textual/model.onnx          input "text": int32 or int64 (N, context_length)
    <model_dir>/clip/<name>/textual/tokenizer.json      a `tokenizers` tokenizer
    <model_dir>/clip/<name>/textual/tokenizer_config.json  pad_token

Embeddings are L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from pixdex.indexer.errors import ModelError, ModelMissing
from pixdex.indexer.layout import CLIP_FILES, STANDIN_MARKER
from pixdex.indexer.modelcache import ModelCache
from pixdex.indexer.preprocess import ClipTransform, clip_preprocess
from pixdex.indexer.sections import Runtime
from pixdex.indexer.session import OnnxSession, fingerprint

if TYPE_CHECKING:
    from PIL import Image



def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read model file: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return value


def check_files(directory: Path, names: tuple[str, ...], kind: str) -> None:
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise ModelMissing(
            f"{kind} model {directory.name!r} is incomplete or absent in {directory}: missing "
            f"{', '.join(missing)}. Put a model there (Immich's layout), set models.{kind} in the config, "
            "or run `pixdex models standin` (with the export extra) for small stand-ins that give meaningless results.")


def normalize_rows(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


QUERY_CACHE = 256  # query texts whose embeddings a model keeps (2 KB each at 512 dimensions)


def clean_text(text: str) -> str:
    """open_clip's basic_clean + whitespace_clean (lower-casing is the tokenizer's normaliser's job)."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


class ClipModel:
    def __init__(self, directory: Path, threads: int = 0, cache: ModelCache | None = None,
                 runtime: Runtime = Runtime()) -> None:
        check_files(directory, CLIP_FILES, "clip")
        self.directory = directory
        self.name = directory.name
        self.config = read_json(directory / "config.json")
        try:
            self.dim = int(self.config["embed_dim"])
            self.transform = ClipTransform.from_cfg(read_json(directory / "visual" / "preprocess_cfg.json"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{directory}: bad CLIP model config: {exc}") from exc
        self.context_length = int(self.config.get("text_cfg", {}).get("context_length", 77))
        self.visual = OnnxSession(directory / "visual" / "model.onnx", threads, cache, runtime)
        self.textual = OnnxSession(directory / "textual" / "model.onnx", threads, cache, runtime)
        self.standin = (directory / STANDIN_MARKER).exists()
        self._queries: OrderedDict[str, NDArray[np.float32]] = OrderedDict()  # recent query texts' embeddings
        self._queries_lock = threading.Lock()

    @cached_property
    def id(self) -> str:
        return f"{self.name}@{fingerprint(self.visual.path, self.textual.path)}"

    @property
    def image_size(self) -> int:
        return self.transform.size

    def preprocess(self, image: Image.Image) -> NDArray[np.float32]:
        return clip_preprocess(image, self.transform)

    def embed_images(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        return normalize_rows(self.visual.run(batch))

    def embed_texts(self, texts: list[str]) -> NDArray[np.float32]:
        return normalize_rows(self.textual.run(self.tokenize(texts)))

    def embed_query_texts(self, texts: list[str]) -> NDArray[np.float32]:
        """`embed_texts` for a search's segments, the last `QUERY_CACHE` texts remembered: a query typed again
        (the web page's search as you type, a desktop search, a repeated command) costs no text-tower run."""
        with self._queries_lock:
            known = {t: self._queries[t] for t in texts if t in self._queries}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            known.update(zip(missing, self.embed_texts(missing), strict=True))
        with self._queries_lock:
            for text in dict.fromkeys(texts):
                self._queries[text] = known[text]
                self._queries.move_to_end(text)
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return np.stack([known[t] for t in texts])

    @cached_property
    def tokenizer(self) -> Tokenizer:
        textual = self.directory / "textual"
        tokenizer = Tokenizer.from_file(str(textual / "tokenizer.json"))
        configured: object = "<|endoftext|>"
        if (textual / "tokenizer_config.json").is_file():
            configured = read_json(textual / "tokenizer_config.json").get("pad_token", configured)
        if isinstance(configured, dict):  # HF writes AddedToken objects too
            configured = configured.get("content", "<|endoftext|>")
        pad_token = str(configured)
        pad_id = tokenizer.token_to_id(pad_token)
        tokenizer.enable_padding(length=self.context_length, pad_token=pad_token,
                                 pad_id=0 if pad_id is None else pad_id)
        tokenizer.enable_truncation(max_length=self.context_length)
        return tokenizer

    def tokenize(self, texts: list[str]) -> NDArray[np.int64]:
        encodings = self.tokenizer.encode_batch([clean_text(t) for t in texts])
        dtype = np.int64 if "int64" in self.textual.input.type else np.int32
        return np.array([e.ids for e in encodings], dtype=dtype)
