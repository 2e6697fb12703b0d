"""Models pixdex knows by name, and getting them from the Hugging Face hub.

`pixdex models pull NAME` downloads a ready ONNX export with `huggingface_hub.snapshot_download`, so
`HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HOME`/`HF_HUB_CACHE`, `HF_TOKEN`, resuming and the progress bars are
the library's. Only the files pixdex loads are fetched (`allow_patterns`), into the hub cache; they are
then linked (or copied, across file systems) into a staging folder beside
`<model_dir>/<kind>/<name>`, checked, and swapped in whole, so a model folder is never half there.

Checked: each file against the hub's own id for it — the sha256 for LFS files, the git blob sha1 for
the others — which `huggingface_hub` records as the cached blob's name but does not verify (it checks
sizes only); then the layout pixdex loads (`layout.CLIP_FILES`, `layout.TAGGER_FILES`). A
`pixdex-model.json` in the folder records where it came from: repo, commit, files with their sizes and
checksums, licence, when.

Layouts:
  clip   Immich's exports (immich-app/<arch>__<pretrained>): config.json, visual/model.onnx,
         visual/preprocess_cfg.json, textual/model.onnx, textual/tokenizer.json, tokenizer_config.json.
  tagger SmilingWolf's WD14 v3 taggers: model.onnx, selected_tags.csv.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import ModelError
from pixdex.indexer.files import staged_dir

log = logging.getLogger(__name__)

MANIFEST = "pixdex-model.json"
CLIP_PATTERNS = ("config.json", "visual/model.onnx", "visual/model.onnx_data", "visual/preprocess_cfg.json",
                 "textual/model.onnx", "textual/model.onnx_data", "textual/tokenizer.json",
                 "textual/tokenizer_config.json", "textual/special_tokens_map.json")
TAGGER_PATTERNS = ("model.onnx", "selected_tags.csv")
REQUIRED = {"clip": ("config.json", "visual/model.onnx", "visual/preprocess_cfg.json", "textual/model.onnx",
                     "textual/tokenizer.json"),
            "tagger": ("model.onnx", "selected_tags.csv")}


@dataclass(frozen=True)
class Known:
    """A model pixdex can pull by name: where it lives on the hub and what it is."""

    name: str  # the folder under <model_dir>/<kind>/, and what [models] clip / tagger name
    kind: str  # clip | tagger
    repo: str
    licence: str
    download_mb: int  # what the pull fetches, roughly (the hub lists exact sizes)
    about: str
    revision: str = "main"
    languages: str = "English"

    @property
    def patterns(self) -> tuple[str, ...]:
        return CLIP_PATTERNS if self.kind == "clip" else TAGGER_PATTERNS


KNOWN: tuple[Known, ...] = (
    Known("ViT-B-32__openai", "clip", "immich-app/ViT-B-32__openai", "MIT (OpenAI CLIP)", 605,
          "OpenAI's CLIP ViT-B/32, 512-d: the default; fast on a CPU (about 4.4 GFLOPs per image)."),
    Known("ViT-B-16__openai", "clip", "immich-app/ViT-B-16__openai", "MIT (OpenAI CLIP)", 600,
          "OpenAI's CLIP ViT-B/16, 512-d: better on small details, about 4× the image cost of B/32."),
    Known("ViT-B-32__laion2b-s34b-b79k", "clip", "immich-app/ViT-B-32__laion2b-s34b-b79k", "MIT (LAION, open_clip)",
          605, "open_clip ViT-B/32 trained on LAION-2B, 512-d: the B/32 cost, better zero-shot accuracy."),
    Known("ViT-L-14__openai", "clip", "immich-app/ViT-L-14__openai", "MIT (OpenAI CLIP)", 1710,
          "OpenAI's CLIP ViT-L/14, 768-d: much better, much slower; for a GPU provider."),
    Known("XLM-Roberta-Base-ViT-B-32__laion5b_s13b_b90k", "clip",
          "immich-app/XLM-Roberta-Base-ViT-B-32__laion5b_s13b_b90k", "MIT (LAION, open_clip)", 1470,
          "open_clip's multilingual ViT-B/32 (XLM-RoBERTa text tower), 512-d: queries in about 100 languages.",
          languages="multilingual (about 100 languages, e.g. German, Korean, Japanese)"),
    Known("wd-vit-tagger-v3", "tagger", "SmilingWolf/wd-vit-tagger-v3", "Apache-2.0", 380,
          "WD14 ViT tagger v3 (448 px, Danbooru tags): best suited to drawings; costly on a CPU."),
    Known("wd-swinv2-tagger-v3", "tagger", "SmilingWolf/wd-swinv2-tagger-v3", "Apache-2.0", 470,
          "WD14 SwinV2 tagger v3 (448 px): a little more accurate than the ViT, a little slower."),
    Known("wd-eva02-large-tagger-v3", "tagger", "SmilingWolf/wd-eva02-large-tagger-v3", "Apache-2.0", 1260,
          "WD14 EVA02-Large tagger v3 (448 px): the most accurate, for a GPU provider."),
)


def known(name: str) -> Known:
    for model in KNOWN:
        if model.name.lower() == name.lower():
            return model
    names = ", ".join(m.name for m in KNOWN)
    raise ModelError(f"{name}: not a model pixdex knows; known: {names} (`pixdex models list`)")


def folder(model_dir: Path, model: Known) -> Path:
    return model_dir / model.kind / model.name


def installed(model_dir: Path, kind: str, name: str) -> str:
    """"yes" when every file pixdex loads is there, "partial" when some are, "no" otherwise."""
    directory = model_dir / kind / name
    present = [(directory / f).is_file() for f in REQUIRED[kind]]
    return "yes" if all(present) else "partial" if any(present) or directory.is_dir() else "no"


def local_models(model_dir: Path) -> list[tuple[str, str]]:
    """(kind, name) of every model folder present, known or not (exports, stand-ins, copies)."""
    found = []
    for kind in ("clip", "tagger"):
        base = model_dir / kind
        if base.is_dir():
            found += [(kind, p.name) for p in sorted(base.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return found


def manifest(directory: Path) -> dict[str, Any]:
    try:
        value: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
        return value
    except (OSError, ValueError):
        return {}


def disk_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0


# Pulling ------------------------------------------------------------------------------------------
Report = Callable[[int, int, str], None]  # (done, total, unit: "B" for bytes, "files" where bytes are not told)


def reporting_tqdm(report: Report, expected: int = 0) -> type:
    """A tqdm that draws nothing and tells `report` how far a download is (for the daemon's status and
    events). huggingface_hub gives it the bytes of the whole snapshot; older releases only the file count.
    The snapshot's byte total grows as each file's download starts, so `expected` (the files' sizes from
    the hub's listing) is the total from the first report on."""
    from tqdm.auto import tqdm  # late: huggingface_hub's bar class loads with a pull only

    bars: dict[int, tuple[int, int]] = {}  # the byte bars (received, written): the further one is told

    class Reporting(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["file"], kwargs["disable"] = io.StringIO(), False
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            if self.unit == "B":
                bars[id(self)] = (int(self.n), int(self.total or 0))
                total = max(expected, *(t for _, t in bars.values()))
                report(min(max(d for d, _ in bars.values()), total), total, "B")
            elif not bars:
                report(int(self.n), int(self.total or 0), "files")
            return shown

    return Reporting


def one_log_line_each() -> None:
    """huggingface_hub gives its loggers a stderr handler of their own and lets them propagate too: each of its
    warnings (a retry) reached the log twice. Only pixdex's handler stays."""
    from huggingface_hub.utils import logging as hub_logging  # late: as in `pull`

    hub_logging.get_logger().handlers.clear()  # its root logger: `huggingface_hub`
    hub_logging.enable_propagation()


def _expected_bytes(model: Known, revision: str | None) -> int:
    """The bytes `pull` will fetch, from the hub's file listing; 0 when it cannot be told (offline, an
    unreachable hub: the download then says why)."""
    from huggingface_hub import HfApi, constants  # late: as in `pull`
    from huggingface_hub.hf_api import RepoFile  # late: as in `pull`

    # late, as in `pull`; public in huggingface_hub.utils, not re-exported there
    from huggingface_hub.utils._paths import filter_repo_objects

    one_log_line_each()
    if constants.HF_HUB_OFFLINE:
        return 0
    try:
        files = [f for f in HfApi().list_repo_tree(model.repo, revision=revision or model.revision, recursive=True)
                 if isinstance(f, RepoFile)]
    except Exception:  # noqa: BLE001 - only a figure for the status; snapshot_download reports the failure
        return 0
    wanted = set(filter_repo_objects([f.path for f in files], allow_patterns=list(model.patterns)))
    return sum(f.size for f in files if f.path in wanted)


def pull(model: Known, model_dir: Path, revision: str | None = None, progress: bool | Report = True) -> Path:
    """Download `model` into <model_dir>/<kind>/<name>, checked; returns that folder. Raises ModelError
    with the reason and what to do (offline, unreachable hub, missing repo or file, bad checksum).
    `progress`: a bar on the terminal, none, or a function told how far it is."""
    # late: huggingface_hub (and its HTTP stack) loads in a process that pulls a model, not in every command
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (  # late: as above
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils.tqdm import disable_progress_bars, enable_progress_bars  # late: as above

    one_log_line_each()
    final = folder(model_dir, model)
    where = os.environ.get("HF_ENDPOINT", constants.ENDPOINT)
    quiet = progress is False
    if quiet:
        disable_progress_bars()
    expected = _expected_bytes(model, revision) if callable(progress) else 0
    tqdm_class = reporting_tqdm(progress, expected) if callable(progress) else None
    try:
        snapshot = Path(snapshot_download(model.repo, revision=revision or model.revision,
                                          allow_patterns=list(model.patterns), tqdm_class=tqdm_class))
        if callable(progress) and expected:
            progress(expected, expected, "B")  # files already in the hub cache are never counted
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelError(f"{model.repo}: not found on the hub at {where} ({_first_line(exc)}); "
                         "check the name and the revision") from None
    except LocalEntryNotFoundError as exc:
        offline = constants.HF_HUB_OFFLINE
        why = ("HF_HUB_OFFLINE is set and the hub cache does not hold it" if offline
               else f"the hub at {where} cannot be reached")
        step = "unset HF_HUB_OFFLINE and run" if offline else "connect and run"
        raise ModelError(f"{model.name}: cannot download ({why}: {_first_line(exc)}); {step} "
                         f"`pixdex models pull {model.name}` again, or copy its files into {final}") from None
    except (EntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ModelError(f"{model.name}: download from {where} failed ({_first_line(exc)}); run "
                         f"`pixdex models pull {model.name}` again (finished files are kept in the hub cache)",
                         ) from None
    finally:
        if quiet:
            enable_progress_bars()
    files = [p for p in sorted(snapshot.rglob("*")) if p.is_file()]
    rel = {str(p.relative_to(snapshot)) for p in files}
    missing = [f for f in REQUIRED[model.kind] if f not in rel]
    if missing:
        raise ModelError(f"{model.repo}: has no {', '.join(missing)}; it is not in the layout pixdex loads "
                         f"({'Immich ONNX export' if model.kind == 'clip' else 'WD14 tagger'})")
    with staged_dir(final) as stage:
        record = []
        for path in files:
            name = str(path.relative_to(snapshot))
            checksum = verify(path, name, model)
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(path, target)
            record.append({"path": name, "size": target.stat().st_size, **checksum})
        commit = snapshot.name  # snapshots/<commit>
        (stage / MANIFEST).write_text(json.dumps({
            "name": model.name, "kind": model.kind, "repo": model.repo, "revision": revision or model.revision,
            "commit": commit, "endpoint": where, "licence": model.licence,
            "pulled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": record}, indent=1))
    return final


def verify(path: Path, name: str, model: Known) -> dict[str, str]:
    """Check a downloaded file against the id the hub gave it (the cached blob's name): sha256 for LFS
    files, git's blob sha1 for the others. Raises ModelError naming the file on a mismatch."""
    expected = Path(os.path.realpath(path)).name
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            sha1.update(block)
    if len(expected) == 64:
        actual, kind = sha256.hexdigest(), "sha256"
    elif len(expected) == 40:
        actual, kind = sha1.hexdigest(), "git-sha1"
    else:
        log.warning("%s: the hub gave no checksum for it; its size was checked only", name)
        return {"sha256": sha256.hexdigest()}
    if actual != expected:
        bad = Path(os.path.realpath(path))
        bad.unlink(missing_ok=True)  # so the next pull downloads it again instead of reusing it
        raise ModelError(f"{model.repo}/{name}: checksum mismatch ({kind} {actual[:16]}…, the hub says "
                         f"{expected[:16]}…); the file was damaged on the way and removed from the cache — run "
                         f"`pixdex models pull {model.name}` again")
    return {"sha256": sha256.hexdigest()}


def remove(model_dir: Path, kind: str, name: str) -> int:
    """Delete an installed model folder; returns the bytes freed. The hub cache keeps its own copy."""
    directory = model_dir / kind / name
    if not directory.is_dir():
        raise ModelError(f"{directory}: not installed")
    size = disk_size(directory)
    trash = directory.with_name(f".{name}.removing")
    shutil.rmtree(trash, ignore_errors=True)
    directory.rename(trash)  # gone at once for a reader; then freed
    shutil.rmtree(trash, ignore_errors=True)
    return size


def describe(model: Known) -> dict[str, Any]:
    return {**asdict(model), "files": list(model.patterns)}


def _link_or_copy(source: Path, target: Path) -> None:
    real = os.path.realpath(source)
    try:
        os.link(real, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(real, target)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
