"""Config: defaults, TOML, XDG paths from the environment, and errors that name key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixdex.indexer.settings import Config, ConfigError, describe_settings, load_config


def test_defaults_follow_xdg_variables(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    config = load_config(environ=environ)  # no file: embedded defaults
    assert config.data_dir == tmp_path / "data" / "pixdex"
    assert config.model_dir == tmp_path / "data" / "pixdex" / "models"
    assert config.folders == [tmp_path / "home" / "Pictures"]
    assert config.search.rrf_k == 60 and config.index.dtype == "f16"
    bare = load_config(environ={"HOME": str(tmp_path / "h")})
    assert bare.data_dir == tmp_path / "h" / ".local" / "share" / "pixdex"


def test_toml_overrides_and_the_default_location(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "pixdex" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[library]\nfolders = ["~/Photos", "/srv/pics"]\n[search]\nrrf_k = 10\ntext_weight = 2\n'
                    '[paths]\ndata_dir = "/var/pixdex"\n')
    config = load_config(environ={"HOME": "/home/a", "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert config.folders == [Path("/home/a/Photos"), Path("/srv/pics")]
    assert (config.search.rrf_k, config.search.text_weight) == (10, 2)
    assert config.data_dir == Path("/var/pixdex")


@pytest.mark.parametrize("toml, message", [
    ("[search]\nrrf_k = 0\n", "search.rrf_k = 0 is not allowed; expected a value from 1 to 10000"),
    ("[search]\nrrf_k = 'sixty'\n", "search.rrf_k = 'sixty' is not allowed; expected a whole number"),
    ("[index]\ndtype = 'f64'\n", "index.dtype = 'f64' is not allowed; expected one of 'f32', 'f16', 'i8'"),
    ("[library]\nfolders = '/pics'\n", "library.folders = '/pics' is not allowed; expected a list of strings"),
    ("[sidecar]\nwrite = 1\n", "sidecar.write = 1 is not allowed; expected true or false"),
    ("[search]\nrrf = 3\n", "unknown key search.rrf; allowed: k, rrf_k"),
    ("[serch]\nk = 3\n", "unknown section [serch]"),
    ("[search\n", "cannot read config"),
])
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"HOME": str(tmp_path)})
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_every_setting_has_a_default_and_help() -> None:
    rows = describe_settings()
    assert len(rows) > 20
    for key, _default, help_text in rows:
        assert help_text.strip().endswith("."), key


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().search.k = 3  # type: ignore[misc]


@pytest.mark.parametrize("folder", ["/", "/proc", "/sys/kernel", "/dev", "/run/user"])
def test_system_folders_are_not_photo_folders(tmp_path: Path, folder: str) -> None:
    """A trial watched "/": the scan walked /proc and other people's files, and 2,778 pseudo-folders stayed in
    `status` after the folder was removed."""
    config = tmp_path / "config.toml"
    config.write_text(f'[library]\nfolders = ["{tmp_path}", "{folder}"]\n')
    with pytest.raises(ConfigError, match=rf"library.folders: {folder}: .*not a photo folder"):
        load_config(config)


def test_removable_drives_under_run_media_may_be_watched() -> None:
    from pixdex.indexer.paths import system_folder

    assert system_folder(b"/run/media/ann/CAMERA") is None and system_folder(b"/home/ann/Pictures") is None
    assert system_folder(b"/run/media") is not None and system_folder(b"/runaway") is None
