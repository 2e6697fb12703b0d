"""Shared fixtures: stand-in models made once per session with the real export code, generated
image folders (fixed seed), an isolated XDG environment and a config that points at the stand-ins."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixdex.daemon import cli

# A suite started in the background by a script inherits SIGINT ignored, and so would every `pixdex` it
# starts (an ignored signal stays ignored across exec): the Ctrl-C tests need it delivered. A handler set
# here is reset to the default in each child.
signal.signal(signal.SIGINT, signal.default_int_handler)

# The suite never touches the person's own pixdex: no test finds the daemon the README's first command
# started (its socket is in the real XDG_RUNTIME_DIR), reads their config or writes into their data. Every
# XDG folder points into a folder of this run; tests that need their own get one (the `env` fixture, Served).
_ISOLATED = Path(tempfile.mkdtemp(prefix="pixdex-suite-"))
for _key in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
    os.environ[_key] = str(_ISOLATED / _key.lower())
    Path(os.environ[_key]).mkdir(mode=0o700)

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus" / "exiftool"
PIXDEX = Path(sys.executable).parent / "pixdex"


@pytest.fixture(scope="module", autouse=True)
def _no_daemon_outlives_its_module() -> Iterator[None]:
    """A fixture that failed before it could stop its daemon (or a test that forgot) leaves none running."""
    yield
    from served import Served

    Served.stop_all()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pixdex.indexer.export import write_standin_clip, write_standin_tagger

    directory = tmp_path_factory.mktemp("models")
    write_standin_clip(directory)
    write_standin_tagger(directory)
    return directory


@dataclass
class Env:
    root: Path
    config: Path
    environ: dict[str, str]
    pics: Path

    @property
    def data(self) -> Path:
        return self.root / "data" / "pixdex"

    def cli(self, *args: str, capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, str, str]:
        """Run the CLI in this process (fast); returns (status, stdout, stderr)."""
        assert capsys is not None
        capsys.readouterr()
        status = cli.main(["--config", str(self.config), *args])
        out, err = capsys.readouterr()
        return status, out, err

    def index_json(self, capsys: pytest.CaptureFixture[str], *dirs: Path) -> dict[str, object]:
        status, out, err = self.cli("index", "--json", *[str(d) for d in (dirs or (self.pics,))], capsys=capsys)
        assert status == 0, err
        return dict(json.loads(out))

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the installed `pixdex` command in a subprocess, as a person would."""
        proc = subprocess.run([str(PIXDEX), "--config", str(self.config), *args], env=self.environ,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc


def write_config(path: Path, model_dir: Path, folders: list[Path], extra: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"[library]\nfolders = {json.dumps([str(f) for f in folders])}\n"
        f"[paths]\nmodel_dir = {json.dumps(str(model_dir))}\n"
        '[models]\nclip = "pixdex-standin-clip"\ntagger = "pixdex-standin-tagger"\nbatch_size = 4\n'
        # The stand-in CLIP's vocabulary tags are random words: off, so they do not match other tests' queries
        # (tests/test_cliptags.py turns them on).
        + CLIP_TAGS_OFF + ("" if "[ocr]" in extra else OCR_OFF) + extra)


CLIP_TAGS_OFF = "[clip_tags]\nenabled = false\n"
# Reading text in images is on by default; tests leave it off unless their extra settings have an [ocr] section.
OCR_OFF = "[ocr]\nenabled = false\n"


@pytest.fixture()
def env(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    environ = dict(os.environ)
    for key, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"),
                     ("XDG_STATE_HOME", "state"), ("XDG_RUNTIME_DIR", "run")):
        environ[key] = str(tmp_path / sub)
        monkeypatch.setenv(key, str(tmp_path / sub))
    (tmp_path / "run").mkdir(mode=0o700)
    pics = tmp_path / "pics"
    pics.mkdir()
    config = tmp_path / "config" / "pixdex" / "config.toml"
    write_config(config, model_dir, [pics])
    yield Env(tmp_path, config, environ, pics)


def solid(color: tuple[int, int, int], size: tuple[int, int] = (96, 72)) -> Image.Image:
    return Image.new("RGB", size, color)


def noise(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def gradient(seed: int, size: tuple[int, int] = (120, 90)) -> Image.Image:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size[0])[None, :, None]
    rows = (a * (1 - t) + b * t).astype(np.uint8)
    return Image.fromarray(np.repeat(rows, size[1], axis=0))


def exif_bytes(camera: tuple[str, str] | None = None, taken: str | None = None, orientation: int | None = None
               ) -> bytes:
    exif = Image.Exif()
    if camera:
        exif[0x010F], exif[0x0110] = camera
    if orientation:
        exif[0x0112] = orientation
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    return exif.tobytes()


def make_library(root: Path) -> dict[str, Path]:
    """A small, varied, deterministic photo folder: names, folders, formats and EXIF that tests look for."""
    files: dict[str, Path] = {}

    def save(rel: str, image: Image.Image, **kwargs: object) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **kwargs)
        files[rel] = path

    save("holiday/beach_sunset_01.jpg", gradient(1), exif=exif_bytes(("Canon", "Canon EOS 5D"), "2019:07:14 18:30:00"))
    save("holiday/beach_sunset_02.jpg", gradient(2), exif=exif_bytes(("Canon", "Canon EOS 5D"), "2021:08:01 09:00:00"))
    save("holiday/harbour_boats.jpg", noise(3),
         exif=exif_bytes(("NIKON CORPORATION", "NIKON D70"), "2020:05:05 12:00:00"))
    save("garden/red_flower.png", solid((220, 30, 40)))
    save("garden/green_leaves.png", solid((30, 200, 60)))
    save("garden/blue_pond.webp", solid((20, 60, 210)))
    save("city/night_street.gif", noise(4).convert("P"))
    save("city/old_tram.bmp", gradient(5))
    save("city/scan_archive.tiff", gradient(6))
    return files


# The other programs, played by real Debian tools (installed when missing and allowed) --------------
def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-q", package]
        if subprocess.run(install, capture_output=True).returncode != 0:  # a fresh machine has no lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(install, capture_output=True)
        found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package {package})")
    return found


@pytest.fixture(scope="session")
def exiftool() -> str:
    return tool("exiftool", "libimage-exiftool-perl")


@pytest.fixture(scope="session")
def exiv2() -> str:
    return tool("exiv2", "exiv2")
