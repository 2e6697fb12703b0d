"""Typed, frozen configuration loaded from TOML (a neutral module: the indexer, query and daemon read it).

`Config` holds one section per table of the file (`sections`: each setting with its default, help and limits)
and the paths that follow from them. `load_config` validates each value and names the key, the bad value and
what is allowed when it refuses one. Paths follow the XDG base directories, read from the ``environ`` mapping
passed in so tests can relocate everything.
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
from pixdex.indexer.paths import system_folder
from pixdex.indexer.sections import (
    ClipTagSettings,
    DecodeSettings,
    DescribeSettings,
    DesktopSettings,
    IndexSettings,
    LibrarySettings,
    ModelSettings,
    OcrSettings,
    PathSettings,
    PipelineSettings,
    Runtime,
    SearchSettings,
    ServerSettings,
    SidecarSettings,
    TaggerSettings,
    WatchSettings,
)


class ConfigError(PixdexError, ValueError):
    """A setting that cannot be used: names the file, the key, the value and what is allowed."""


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
    ocr: OcrSettings = field(default_factory=OcrSettings)
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
    config = dataclasses.replace(config_from_dict(raw, environ, source=str(path)), source=path)
    for folder in config.folders:
        if (why := system_folder(os.fsencode(os.path.realpath(folder)))) is not None:
            raise ConfigError(f"{path}: library.folders: {folder}: {why}")
    return config


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
        assert section.default_factory is not dataclasses.MISSING  # every section has a factory
        default = section.default_factory()
        for f in dataclasses.fields(default):
            rows.append((f"{section.name}.{f.name}", getattr(default, f.name), f.metadata["help"]))
    return rows
