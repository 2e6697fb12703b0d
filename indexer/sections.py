"""The config file's sections, one frozen dataclass each: every setting with its default, its one-line help
and what it allows (``[library]`` → `LibrarySettings`, …). `settings.Config` holds them; `settings.load_config`
checks each value against what its field allows.

A setting is ``setting(default, help, choices=…, min=…, max=…)``: a dataclass field whose metadata carries the
help and the limits. A list setting names its default as a factory (``field(default_factory=…)``, its metadata
from `about`): a frozen dataclass must not share one list between its instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def about(help: str, *, choices: tuple[Any, ...] = (), min: float | None = None,
          max: float | None = None) -> dict[str, Any]:
    """A setting's metadata: its help line and what it allows (read by `settings.load_config` and the docs)."""
    return {"help": help, "choices": choices, "min": min, "max": max}


def setting(default: Any, help: str, *, choices: tuple[Any, ...] = (), min: float | None = None,
            max: float | None = None) -> Any:
    """A field with an immutable default and its metadata (`about`)."""
    return field(default=default, metadata=about(help, choices=choices, min=min, max=max))


@dataclass(frozen=True)
class LibrarySettings:
    folders: list[str] = field(default_factory=lambda: ["~/Pictures"],
                               metadata=about("Folders to index, recursively."))
    skip_dirs: list[str] = field(
        default_factory=lambda: [".*", "@eaDir", "#recycle", "__pycache__", "node_modules"],
        metadata=about("Glob patterns of directory names never entered (hidden ones, .git, …); a folder holding a "
                       ".nomedia or .pixdexignore file is skipped too."))
    exclude: list[str] = field(default_factory=list, metadata=about(
        "Glob patterns of paths never indexed, e.g. '*/exports/*' or '*_thumb.jpg'."))
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
    providers: list[str] = field(default_factory=lambda: ["cpu"], metadata=about(
        "ONNX Runtime execution providers to try, in order (cpu, cuda, rocm, openvino, coreml, directml, tensorrt); "
        "one this onnxruntime build lacks or that fails to start is skipped with a warning, and the CPU is always the "
        "last resort.", choices=("cpu", "cuda", "rocm", "openvino", "coreml", "directml", "tensorrt")))
    optimization: str = setting("all", "ONNX Runtime graph optimization. \"all\" is fastest on a CPU; an fp16 "
                                       "export needs \"extended\" (onnxruntime 1.31's layout pass crashes on "
                                       "half-precision graphs).", choices=("all", "extended", "basic", "off"))
    query_threads: int = setting(1, "ONNX Runtime threads of the query-time text tower.", min=1, max=256)
    batch_size: int = setting(16, "Images per inference batch.", min=1, max=512)
    auto_pull: bool = setting(True, "When the configured models are missing, `pixdex serve` pulls them from the "
                                    "Hugging Face hub in the background (HF_ENDPOINT, HF_HUB_OFFLINE honoured) and "
                                    "runs in reduced mode meanwhile.")
    idle_ttl: float = setting(120.0, "Seconds a loaded model may sit unused before it is unloaded.", min=0.0,
                              max=86_400.0)


@dataclass(frozen=True)
class TaggerSettings:
    general_threshold: float = setting(0.35, "Minimum confidence for a general tag.", min=0.0, max=1.0)
    character_threshold: float = setting(0.85, "Minimum confidence for a character tag.", min=0.0, max=1.0)
    exclude: list[str] = field(default_factory=list, metadata=about(
        "Tags never stored or written, as they appear in selected_tags.csv."))
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
    templates: list[str] = field(default_factory=lambda: ["a photo of {}.", "a photo showing {}.", "{}"],
                                 metadata=about("Prompt templates ({} is the concept); a concept's embedding is their "
                                                "mean."))
    vocabulary_extra: list[str] = field(default_factory=list, metadata=about(
        "Your own vocabulary files (UTF-8, one concept per line, # comments), added to pixdex's."))
    exclude: list[str] = field(default_factory=list, metadata=about("Vocabulary concepts never used as tags."))


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
class OcrSettings:
    enabled: bool = setting(True, "Read the text in each image with the OCR model that ships with rapidocr (PP-OCRv6, "
                                  "offline), in the background after the image is searchable.")
    max_side: int = setting(1280, "Text is read on a copy at most this many pixels on its long side (the cost grows "
                                  "with it; small print needs more).", min=320, max=4096)
    min_confidence: float = setting(0.6, "Lines the model is less sure of (0 to 1) are left out.", min=0.0, max=1.0)
    detect_side: int = setting(960, "Lines are found on a copy at most this size (at most max_side), then read on the "
                                    "max_side copy: detection costs about the square of it.", min=320, max=4096)
    gate_side: int = setting(320, "Text is first looked for on a copy this size; an image where none is found costs "
                                  "no more.", min=160, max=1024)
    max_lines: int = setting(200, "At most this many lines are read per image (the largest ones first).",
                             min=1, max=5000)
    timeout: float = setting(120.0, "Seconds one image may take before it is recorded as unread.", min=1.0,
                             max=3600.0)
    clip_gate: float = setting(0.0, "Images whose CLIP similarity (cosine) to \"text, document, screenshot, sign\" is "
                                    "below this are not read; 0: off. The scale depends on the CLIP model; never "
                                    "applied with a stand-in model.", min=0.0, max=1.0)


@dataclass(frozen=True)
class DecodeSettings:
    max_pixels: int = setting(150_000_000, "Images with more pixels are refused as decompression bombs.",
                              min=1_000_000)
    max_megabytes: int = setting(1024, "Files larger than this are not read (recorded as failed, with the reason), so "
                                       "one huge file cannot exhaust the memory; raise it for giant TIFF panoramas.",
                                 min=1, max=1 << 20)
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
    workers_idle: float = setting(60.0, "Seconds without work after which the worker processes (decoding, the "
                                  "models) exit; the next work starts them again (0: they stay).", min=0.0,
                                  max=86400.0)
    nice: int = setting(10, "CPU niceness of the worker processes, at least (0 keeps it); `pixdex serve` also adds it "
                            "to its indexing process, so queries go first.", min=0, max=19)
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
    poll: list[str] = field(default_factory=list, metadata=about(
        "Folders watched by polling instead of inotify (network and FUSE folders are polled anyway)."))
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


DEFAULT_RUNTIME = Runtime()  # the CPU, every optimization
