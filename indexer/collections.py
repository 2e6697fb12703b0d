"""Collections: the named folders pixdex watches.

Folders come from two places: the config file's `library.folders` (named after their last
component, made unique) and `pixdex watch add DIR [--name NAME]`, kept in the catalog. A query
narrows to some with `in:NAME`, and a TCP token can be limited to some (it then sees nothing else).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pixdex.indexer.catalog import Catalog
from pixdex.indexer.errors import PixdexError
from pixdex.indexer.paths import display_path, system_folder
from pixdex.indexer.settings import Config

NAME = re.compile(r"^[\w][\w.-]{0,63}$")


class CollectionError(PixdexError, ValueError):
    """A collection that cannot be added, removed or found, with what to do instead."""


@dataclass(frozen=True)
class Collection:
    name: str
    path: bytes  # real path
    source: str  # "config" (the config file's library.folders) or "added" (pixdex watch add)

    @property
    def fspath(self) -> Path:
        return Path(os.fsdecode(self.path))

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "path": display_path(self.path), "source": self.source}


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise CollectionError(f"collection name {name!r} is not allowed; use 1–64 letters, digits, '.', '-' or '_', "
                              "starting with a letter or digit")
    return name


def default_name(path: bytes, taken: set[str]) -> str:
    base = re.sub(r"[^\w.-]+", "-", os.fsdecode(os.path.basename(path.rstrip(b"/")) or b"root")).strip(".-")
    base = (base or "folder")[:56]
    name, n = base, 2
    while name.lower() in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def all_collections(config: Config, catalog: Catalog | None) -> list[Collection]:
    """The config file's folders first, then the added ones; a name is unique regardless of case."""
    found: list[Collection] = []
    taken: set[str] = set()
    added = catalog.collections() if catalog is not None else []
    reserved = {name.lower() for name, _ in added}
    for folder in config.folders:
        real = os.fsencode(os.path.realpath(folder))
        name = default_name(real, taken | reserved)
        taken.add(name.lower())
        found.append(Collection(name, real, "config"))
    paths = {c.path for c in found}
    for name, path in added:
        if path not in paths:
            found.append(Collection(name, path, "added"))
    return found


def find(collections: list[Collection], name: str) -> Collection:
    for collection in collections:
        if collection.name.lower() == name.lower():
            return collection
    known = ", ".join(c.name for c in collections) or "none yet (pixdex watch add DIR --name NAME)"
    raise CollectionError(f"in:{name}: no such collection; known: {known}")


def plan_add(collections: list[Collection], path: Path, name: str | None) -> Collection:
    """What `watch add` makes of `path`. Collections already inside it stay, with their names (a query's `in:`
    and a token's scope go on naming them; removing the outer one keeps what they hold). Refuses a folder that is
    missing, already watched or a system folder, and a name that is invalid or taken."""
    real = os.fsencode(os.path.realpath(path))
    if not os.path.isdir(real):
        raise CollectionError(f"{display_path(real)}: not a folder; give a folder to watch")
    if (why := system_folder(real)) is not None:
        raise CollectionError(f"{display_path(real)}: {why}")
    for c in collections:
        if c.path == real or real.startswith(c.path.rstrip(b"/") + b"/"):
            raise CollectionError(f"{display_path(real)}: already watched as part of collection {c.name!r}")
    taken = {c.name.lower() for c in collections}
    chosen = check_name(name) if name else default_name(real, taken)
    if chosen.lower() in taken:
        raise CollectionError(f"collection name {chosen!r} is taken; choose another with --name")
    return Collection(chosen, real, "added")


def removable(collections: list[Collection], key: str, config_file: Path | None) -> Collection:
    """The collection `watch remove KEY` (a name, or a folder's path) removes; the config file's are
    not pixdex's to remove."""
    real = os.fsencode(os.path.realpath(key)) if "/" in key else b""
    found = next((c for c in collections if c.path == real or c.name.lower() == key.lower()), None)
    if found is None:
        raise CollectionError(f"{key}: no watched folder by that name or path; `pixdex watch list` shows them")
    if found.source == "config":
        raise CollectionError(f"{found.name} ({display_path(found.path)}) is listed in "
                              f"{config_file or 'the config file'} (library.folders); remove it there and "
                              "`pixdex reload`")
    return found
