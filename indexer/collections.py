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
from pixdex.indexer.errors import PixdexError, display_path
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
