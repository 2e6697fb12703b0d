"""Typed, frozen configuration loaded from TOML (a neutral module: the indexer, query and daemon read it).

Every setting lives in one dataclass field with its default and a one-line help
(``field(metadata={"help": ...})``); `load_config` validates each value and names the key,
the bad value and what is allowed when it refuses one. Paths follow the XDG base
directories, read from the ``environ`` mapping passed in so tests can relocate everything.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import PixdexError
from pixdex.indexer.layout import Layout


class ConfigError(PixdexError, ValueError):
    """A setting that cannot be used: names the file, the key, the value and what is allowed."""


def setting(default: Any, help: str, *, choices: tuple[Any, ...] = (), min: float | None = None,
            max: float | None = None) -> Any:
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class LibrarySettings:
    folders: list[str] = setting(["~/Pictures"], "Folders to index, recursively.")
    skip_dirs: list[str] = setting([".*", "@eaDir", "#recycle", "__pycache__", "node_modules"],
                                   "Glob patterns of directory names never entered (hidden ones, .git, …); a "
                                   "folder holding a .nomedia or .pixdexignore file is skipped too.")
    exclude: list[str] = setting([], "Glob patterns of paths never indexed, e.g. '*/exports/*' or '*_thumb.jpg'.")
    follow_symlinks: bool = setting(False, "Follow symbolic links to directories while scanning.")


@dataclass(frozen=True)
class PathSettings:
    data_dir: str = setting("", "Catalog and indexes; empty means $XDG_DATA_HOME/pixdex.")
    model_dir: str = setting("", "Model directory; empty means <data_dir>/models.")


@dataclass(frozen=True)
class ModelSettings:
    clip: str = setting("ViT-B-32__openai", "CLIP model: a folder under <model_dir>/clip/.")
    tagger: str = setting("", "WD14-style tagger: a folder under <model_dir>/tagger/ (`pixdex models pull "
                              "wd-vit-tagger-v3`); empty (the default: on a CPU a 448-px tagger costs many times the "
                              "CLIP image tower) leaves tagging to the CLIP vocabulary ([clip_tags]).")
    threads: int = setting(0, "ONNX Runtime intra-op threads for indexing; 0 lets it use every core.", min=0, max=256)
    providers: list[str] = setting(["cpu"], "ONNX Runtime execution providers to try, in order (cpu, cuda, rocm, "
                                            "openvino, coreml, directml, tensorrt); one this onnxruntime build lacks "
                                            "or that fails to start is skipped with a warning, and the CPU is always "
                                            "the last resort.",
                                   choices=("cpu", "cuda", "rocm", "openvino", "coreml", "directml", "tensorrt"))
    optimization: str = setting("all", "ONNX Runtime graph optimization. \"all\" is fastest on a CPU; an fp16 "
                                       "export needs \"extended\" (onnxruntime 1.31's layout pass crashes on "
                                       "half-precision graphs).", choices=("all", "extended", "basic", "off"))
    query_threads: int = setting(1, "ONNX Runtime threads of the query-time text tower.", min=1, max=256)
    batch_size: int = setting(16, "Images per inference batch.", min=1, max=512)
    auto_pull: bool = setting(True, "When the configured models are missing, `pixdex serve` pulls them from the "
                                    "Hugging Face hub in the background (HF_ENDPOINT, HF_HUB_OFFLINE honoured) and runs "
                                    "in reduced mode meanwhile.")
    idle_ttl: float = setting(120.0, "Seconds a loaded model may sit unused before it is unloaded.", min=0.0,
                              max=86_400.0)


@dataclass(frozen=True)
class TaggerSettings:
    general_threshold: float = setting(0.35, "Minimum confidence for a general tag.", min=0.0, max=1.0)
    character_threshold: float = setting(0.85, "Minimum confidence for a character tag.", min=0.0, max=1.0)
    exclude: list[str] = setting([], "Tags never stored or written, as they appear in selected_tags.csv.")
    max_tags: int = setting(30, "At most this many tags per image, highest confidence first.", min=1, max=1000)
    mcut: bool = setting(False, "Choose each image's thresholds automatically (MCut: the widest gap between sorted "
                                "scores), separately for general and character tags, instead of the fixed ones.")


@dataclass(frozen=True)
class ClipTagSettings:
    enabled: bool = setting(True, "Zero-shot tags from the CLIP embedding and pixdex's vocabulary: one matrix "
                                  "product per image on the embedding computed anyway.")
    min_sigma: float = setting(4.0, "A concept is a tag when the image is this many standard deviations more similar "
                                    "to it than to the vocabulary on average (calibrated per image, not a raw cosine).",
                               min=0.5, max=50.0)
    max_tags: int = setting(8, "At most this many vocabulary tags per image, best first.", min=1, max=200)
    templates: list[str] = setting(["a photo of {}.", "a photo showing {}.", "{}"],
                                   "Prompt templates ({} is the concept); a concept's embedding is their mean.")
    vocabulary_extra: list[str] = setting([], "Your own vocabulary files (UTF-8, one concept per line, # comments), "
                                              "added to pixdex's.")
    exclude: list[str] = setting([], "Vocabulary concepts never used as tags.")


DESCRIBE_PROMPT = ("Describe this photo for a personal photo library's search. Answer in {language}, as JSON: "
                   "\"description\": one or two plain sentences saying what the photo shows; \"keywords\": 5 to 12 "
                   "short keywords (objects, people, animals, place, activity, occasion, style); \"text\": every "
                   "piece of text readable in the image, verbatim, or an empty string.")


@dataclass(frozen=True)
class DescribeSettings:
    enabled: bool = setting(False, "Describe each image with a local vision LLM served by Ollama: a description, "
                                   "keywords and the text visible in it (slow: seconds per image).")
    model: str = setting("qwen2.5vl:3b", "The Ollama model (a vision one: qwen2.5vl, gemma3, llama3.2-vision, llava…); "
                                         "`ollama pull` it first.")
    host: str = setting("", "The Ollama server; empty: $OLLAMA_HOST, else http://127.0.0.1:11434.")
    prompt: str = setting(DESCRIBE_PROMPT, "The instruction sent with each image ({language} is replaced).")
    language: str = setting("English", "The language of the description and keywords.")
    timeout: float = setting(300.0, "Seconds one answer may take.", min=1.0, max=3600.0)
    retries: int = setting(2, "Tries again (with backoff) after a timeout or an answer that is not the JSON asked for.",
                           min=0, max=10)
    max_side: int = setting(1024, "The image is sent at most this many pixels on its long side.", min=64, max=8192)
    keep_alive: str = setting("5m", "How long Ollama keeps the model loaded after a request.")


@dataclass(frozen=True)
class DecodeSettings:
    max_pixels: int = setting(150_000_000, "Images with more pixels are refused as decompression bombs.",
                              min=1_000_000)
    workers: int = setting(2, "Decoding worker processes (read, hash, decode, preprocess, sidecars).", min=1, max=64)
    lookahead_batches: int = setting(3, "Batches decoded ahead of the model.", min=1, max=64)
    timeout: float = setting(120.0, "Seconds one file may take to decode before it is recorded as failed.",
                             min=1.0, max=3600.0)


@dataclass(frozen=True)
class PipelineSettings:
    batch_wait: float = setting(0.2, "Seconds a partial batch waits for more images before inference.",
                                min=0.0, max=60.0)
    commit_items: int = setting(256, "Commit after this many changed images.", min=1, max=100_000)
    commit_seconds: float = setting(0.5, "Commit at the latest this many seconds after the first change.",
                                    min=0.01, max=600.0)
    nice: int = setting(10, "CPU niceness of the worker processes, at least (0 keeps it); `pixdex serve` also adds it to its indexing process, so queries go first.", min=0, max=19)
    idle_io: bool = setting(True, "Give the worker processes the idle I/O scheduling class.")
    idle_cpu: bool = setting(True, "Put the worker processes in the SCHED_IDLE CPU class, as Tracker's miners do: "
                             "they get only CPU time nothing else wants, so searches and other programs go "
                             "first (on a machine busy all the time, indexing waits). Off: `nice` alone.")


@dataclass(frozen=True)
class SidecarSettings:
    write: bool = setting(True, "Write tags into an XMP sidecar beside each image (read it either way).")
    tag_parent: str = setting("pixdex", "Parent of pixdex's tags in lr:hierarchicalSubject / digiKam:TagsList.")
    naming: str = setting("image.ext.xmp", "Name of a new sidecar: IMG.jpg.xmp (darktable, digiKam, Immich) or "
                          "IMG.xmp (Adobe, Capture One). Both are read; an existing one is always used.",
                          choices=("image.ext.xmp", "image.xmp"))
    embedded: bool = setting(False, "Also write the keywords into the XMP inside JPEG and TIFF files, where "
                             "Lightroom reads them (atomic; the image data is verified unchanged byte for byte).")
    embedding: bool = setting(True, "Store each image's CLIP embedding in its sidecar (f16, about 1.4 KB), so a "
                              "library copied elsewhere is searchable without running the model again.")


@dataclass(frozen=True)
class IndexSettings:
    dtype: str = setting("f16", "Scalar type of stored vectors.", choices=("f32", "f16", "i8"))
    connectivity: int = setting(16, "HNSW connectivity of the vector index.", min=2, max=256)
    expansion_search: int = setting(128, "HNSW search expansion (recall versus speed).", min=8, max=4096)
    save_seconds: float = setting(60.0, "Save the vector index file at most this often while it changes.",
                                  min=1.0, max=86_400.0)
    save_changes: int = setting(2000, "Save the vector index file once this many vectors changed since the last save.",
                                min=1, max=10_000_000)


@dataclass(frozen=True)
class SearchSettings:
    k: int = setting(20, "Results shown by default.", min=1, max=10_000)
    rrf_k: int = setting(60, "Reciprocal Rank Fusion constant k.", min=1, max=10_000)
    vector_weight: float = setting(1.0, "Weight of the vector (CLIP) side in the fusion.", min=0.0, max=100.0)
    text_weight: float = setting(1.0, "Weight of the text (BM25) side in the fusion.", min=0.0, max=100.0)
    candidates: int = setting(200, "Candidates taken from each side before fusing.", min=10, max=100_000)
    related_tags: float = setting(0.9, "A query word also matches images tagged with vocabulary concepts whose "
                                       "prompt embeddings are at least this similar to the word's (CLIP text "
                                       "tower, cosine; \"animal\" finds \"dog\"); 1 turns it off.", min=0.0, max=1.0)
    related_max: int = setting(8, "At most this many related tags per query word.", min=0, max=100)


@dataclass(frozen=True)
class WatchSettings:
    settle: float = setting(1.0, "Seconds a file's size and time must stay unchanged (when no close-after-write "
                            "is seen) before it is taken.", min=0.05, max=3600.0)
    debounce: float = setting(0.3, "Seconds of quiet after the last event before changed folders are rescanned.",
                              min=0.0, max=60.0)
    reconcile: float = setting(3600.0, "Seconds between full rescans of every folder (randomised ±25%); 0 never.",
                               min=0.0, max=7 * 86_400.0)
    poll: list[str] = setting([], "Folders watched by polling instead of inotify (network and FUSE folders are "
                              "polled anyway).")
    poll_interval: float = setting(30.0, "Seconds between two polls of a polled folder.", min=1.0, max=86_400.0)


@dataclass(frozen=True)
class ServerSettings:
    socket: str = setting("", "Unix socket; empty means $XDG_RUNTIME_DIR/pixdex/pixdex.sock.")
    tcp: bool = setting(True, "Also listen on loopback TCP (bearer token required).")
    port: int = setting(7817, "Loopback TCP port.", min=1, max=65535)
    max_upload_mb: float = setting(32.0, "Largest image upload a query may send, in MiB.", min=0.1, max=1024.0)
    max_query_chars: int = setting(2000, "Longest query string accepted.", min=10, max=1_000_000)
    lan: str = setting("", "Also serve the web page and API to other devices on this address (e.g. 0.0.0.0 or "
                       "this machine's LAN address), token or login link required; empty: loopback only.")
    lan_port: int = setting(7818, "Port of the LAN listener (`server.lan`).", min=1, max=65535)
    max_connections: int = setting(256, "Open connections each listener (the Unix socket, loopback TCP, the LAN) "
                                   "holds at most; lowered at start to fit the open-file limit, the Unix socket's "
                                   "share set aside first. One more closes the least recently active idle "
                                   "connection, or gets a 503 when every one is busy with a request.",
                                   min=16, max=65536)
    max_connections_per_peer: int = setting(64, "Open connections one address may hold on a TCP listener (on loopback "
                                            "every local program is 127.0.0.1); one more closes that address's least "
                                            "recently active idle connection, or gets a 503.", min=1, max=65536)
    idle_timeout: float = setting(10.0, "Seconds a connection may stay open without a request in progress: to send "
                                  "its first request's headers, and between two keep-alive requests.",
                                  min=1.0, max=3600.0)
    thumbnail_jobs: int = setting(4, "Thumbnails made at once (in the indexing process's decode workers); more "
                                  "requests wait their turn, and past 64 waiting get a 503. Cached ones are served "
                                  "at once.", min=1, max=64)
    thumbnail_cache_mb: float = setting(512.0, "Size of pixdex's own thumbnail cache ($XDG_CACHE_HOME/pixdex/"
                                        "thumbnails), in MiB; the daemon removes the least recently used beyond it.",
                                        min=1.0, max=1_000_000.0)


@dataclass(frozen=True)
class DesktopSettings:
    min_query: int = setting(3, "GNOME/KDE search: shorter queries get no results (a provider must not slow the "
                             "shell on every first letter); a CJK character counts two.", min=1, max=100)
    answer_ms: int = setting(200, "GNOME/KDE search: answer within this many milliseconds with what is ready.",
                             min=20, max=5000)
    results: int = setting(12, "GNOME/KDE search: results shown per query.", min=1, max=100)
    opener: str = setting("xdg-open", "The program that opens an image, a folder or the web page.")


@dataclass(frozen=True)
class Runtime:
    """How ONNX graphs run: `[models] providers` and `optimization` (hashable, for worker specs)."""

    providers: tuple[str, ...] = ("cpu",)
    optimization: str = "all"


def runtime(config: Config) -> Runtime:
    return Runtime(tuple(config.models.providers), config.models.optimization)


@dataclass(frozen=True)
class Config:
    library: LibrarySettings = field(default_factory=LibrarySettings)
    paths: PathSettings = field(default_factory=PathSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    tagger: TaggerSettings = field(default_factory=TaggerSettings)
    clip_tags: ClipTagSettings = field(default_factory=ClipTagSettings)
    describe: DescribeSettings = field(default_factory=DescribeSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    desktop: DesktopSettings = field(default_factory=DesktopSettings)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False, compare=False)
    source: Path | None = field(default=None, repr=False, compare=False)  # the file it was read from

    @property
    def data_dir(self) -> Path:
        if self.paths.data_dir:
            return self._expand(self.paths.data_dir)
        base = self.environ.get("XDG_DATA_HOME") or str(self._home() / ".local" / "share")
        return Path(base) / "pixdex"

    @property
    def layout(self) -> Layout:
        return Layout(self.data_dir)

    @property
    def model_dir(self) -> Path:
        return self._expand(self.paths.model_dir) if self.paths.model_dir else self.data_dir / "models"

    @property
    def folders(self) -> list[Path]:
        return [self._expand(f) for f in self.library.folders]

    @property
    def runtime_dir(self) -> Path:
        """Where the socket lives: $XDG_RUNTIME_DIR/pixdex, else a private folder under /tmp."""
        base = self.environ.get("XDG_RUNTIME_DIR")
        return Path(base) / "pixdex" if base else Path(f"/tmp/pixdex-{os.getuid()}")

    @property
    def socket_path(self) -> Path:
        return self._expand(self.server.socket) if self.server.socket else self.runtime_dir / "pixdex.sock"

    @property
    def state_dir(self) -> Path:
        """$XDG_STATE_HOME/pixdex: the TCP tokens."""
        base = self.environ.get("XDG_STATE_HOME") or str(self._home() / ".local" / "state")
        return Path(base) / "pixdex"

    @property
    def cache_dir(self) -> Path:
        base = self.environ.get("XDG_CACHE_HOME") or str(self._home() / ".cache")
        return Path(base) / "pixdex"

    def _home(self) -> Path:
        return Path(self.environ.get("HOME") or Path.home())

    def _expand(self, value: str) -> Path:
        if value == "~" or value.startswith("~/"):
            value = str(self._home()) + value[1:]
        return Path(os.path.expandvars(value)).absolute()


def default_config_path(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME") or str(Path.home())
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return Path(base) / "pixdex" / "config.toml"


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load `path` (or the XDG default, which may be absent) over the embedded defaults."""
    environ = dict(os.environ if environ is None else environ)
    explicit = path is not None
    path = path or default_config_path(environ)
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: config file not found (omit --config to use the defaults)")
        return Config(environ=environ)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    return dataclasses.replace(config_from_dict(raw, environ, source=str(path)), source=path)


def load_config_leniently(path: Path | None = None, environ: Mapping[str, str] | None = None
                          ) -> tuple[Config, list[str]]:
    """The config with the settings it refuses left out (at their defaults), and why each was: for commands
    that only ask the running daemon, which keeps its last good config when a file it is sent goes bad. A file
    that is not TOML at all, or is missing when named, is refused as `load_config` refuses it."""
    try:
        return load_config(path, environ), []
    except ConfigError as refused:
        environ = dict(os.environ if environ is None else environ)
        path = path or default_config_path(environ)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            raise refused from None
    kept: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for section, values in raw.items():
        for key, value in (values.items() if isinstance(values, dict) else [(None, values)]):
            trial = {**kept, section: {**kept.get(section, {}), **({} if key is None else {key: value})}}
            try:
                config_from_dict(trial, environ, source=str(path))
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            kept = trial
    return dataclasses.replace(config_from_dict(kept, environ, source=str(path)), source=path), problems


def config_from_dict(raw: Mapping[str, Any], environ: Mapping[str, str], source: str = "config") -> Config:
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    known = {f.name for f in dataclasses.fields(Config) if f.name not in ("environ", "source")}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"{source}: unknown section [{name}]; allowed: {', '.join(sorted(known))}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{name}] must be a table of settings, got {value!r}")
        sections[name] = _build_section(hints[name], name, value, source)
    return Config(**sections, environ=environ)


def _build_section(cls: type, section: str, values: Mapping[str, Any], source: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {section}.{key}; allowed: {', '.join(fields)}")
        _check(f"{section}.{key}", value, hints[key], fields[key].metadata, source)
    return cls(**values)


def _check(key: str, value: Any, hint: Any, meta: Mapping[str, Any], source: str) -> None:
    def refuse(allowed: str) -> ConfigError:
        return ConfigError(f"{source}: {key} = {value!r} is not allowed; expected {allowed}")

    if hint is bool and not isinstance(value, bool):
        raise refuse("true or false")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise refuse("a whole number")
    if hint is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise refuse("a number")
    if hint is str and not isinstance(value, str):
        raise refuse("a string")
    if typing.get_origin(hint) is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise refuse("a list of strings")
    if meta.get("choices") and (not set(value) <= set(meta["choices"]) if isinstance(value, list)
                                else value not in meta["choices"]):
        raise refuse(("a list of " if isinstance(value, list) else "") + "one of "
                     + ", ".join(repr(c) for c in meta["choices"]))
    if key == "clip_tags.templates" and not all("{}" in t for t in value):
        raise refuse("templates that each hold {} where the concept goes")
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        raise refuse(f"a value from {low} to {high}")


def describe_settings() -> list[tuple[str, Any, str]]:
    """Every setting as (dotted key, default, help), for `pixdex config` and the docs test."""
    rows = []
    for section in dataclasses.fields(Config):
        if section.name in ("environ", "source"):
            continue
        default = section.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(default):
            rows.append((f"{section.name}.{f.name}", getattr(default, f.name), f.metadata["help"]))
    return rows
