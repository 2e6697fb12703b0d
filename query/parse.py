"""Query strings → `Query`: free text, "exact phrases", +/- arithmetic and filters.

    beach + sunset - people tag:dog -tag:cat folder:~/Pictures ext:png after:2020-01-01
    before:2021 camera:canon "golden hour" in:holidays

``in:NAME`` narrows to a collection (a named watched folder); the service resolves names to folders.

Filters restrict both the vector side and the text side. ``after:`` is inclusive from the start
of its day (or month, or year); ``before:`` is exclusive from the start of its period.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pixdex.indexer.errors import PixdexError
from pixdex.indexer.fulltext import normalize_ext, normalize_tag

FILTER_KEYS = ("tag", "folder", "in", "ext", "after", "before", "camera")
TOKEN = re.compile(
    r'(?P<filter>-?(?:' + "|".join(FILTER_KEYS) + r'):(?:"[^"]*"|\S*))'
    r'|(?P<phrase>"[^"]*")'
    r'|(?P<op>(?<!\S)[+-](?!\S))'
    r'|(?P<word>\S+)')


UNKNOWN_FILTER = re.compile(r"-?([A-Za-z]+):\S")


class QueryError(PixdexError, ValueError):
    """A query that cannot be run, with what to write instead."""


@dataclass(frozen=True)
class Filters:
    tags: tuple[str, ...] = ()
    not_tags: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    not_folders: tuple[str, ...] = ()
    exts: tuple[str, ...] = ()
    not_exts: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()  # in:NAME, resolved by the service into `within`
    not_collections: tuple[str, ...] = ()
    within: tuple[tuple[str, ...], ...] = ()  # each group: one of these folders (in:, a token's scope)
    after: datetime | None = None
    before: datetime | None = None

    @property
    def empty(self) -> bool:
        return self == Filters()


@dataclass(frozen=True)
class Query:
    positive: tuple[str, ...] = ()  # segments joined by '+' (the first one included)
    negative: tuple[str, ...] = ()  # segments after '-'
    text: str = ""  # what the text side searches: positive words and "phrases"
    filters: Filters = field(default_factory=Filters)
    unknown: tuple[str, ...] = ()  # words shaped like filters pixdex does not know (searched as words)

    @property
    def notes(self) -> list[str]:
        return [f"{word}: not a filter pixdex knows ({', '.join(k + ':' for k in FILTER_KEYS)}); searched as words"
                for word in self.unknown]

    @property
    def has_text(self) -> bool:
        return bool(self.positive)


def parse_query(raw: str, cwd: Path | None = None) -> Query:
    cwd = cwd or Path.cwd()
    filters: dict[str, list[str]] = {k: [] for k in Filters.__dataclass_fields__
                                     if k not in ("after", "before", "within")}
    dates: dict[str, datetime] = {}
    segments: list[tuple[str, list[str]]] = [("+", [])]
    text_parts: list[str] = []
    unknown: list[str] = []
    for match in TOKEN.finditer(raw):
        kind, value = match.lastgroup, match.group()
        if kind == "filter":
            _add_filter(value, filters, dates, cwd)
        elif kind == "op":
            segments.append((value, []))
        elif kind == "phrase":
            phrase = value.strip('"').strip()
            if phrase:
                segments[-1][1].append(phrase)
                if segments[-1][0] == "+":
                    text_parts.append(f'"{phrase}"')
        else:
            word = value.strip('"')
            if UNKNOWN_FILTER.match(word) and "://" not in word:
                unknown.append(word)
            if word:
                segments[-1][1].append(word)
                if segments[-1][0] == "+":
                    text_parts.append(word)
    positive = tuple(" ".join(words) for sign, words in segments if sign == "+" and words)
    negative = tuple(" ".join(words) for sign, words in segments if sign == "-" and words)
    if negative and not positive:
        raise QueryError(f"{raw!r}: nothing to look for before '-'; write e.g. 'beach - people'")
    built = Filters(**{k: tuple(v) for k, v in filters.items()}, **dates)  # type: ignore[arg-type]
    if built.after and built.before and built.after >= built.before:
        raise QueryError(f"{raw!r}: after:{built.after.date()} is not before before:{built.before.date()}")
    return Query(positive, negative, " ".join(text_parts), built, tuple(unknown))


def _add_filter(token: str, filters: dict[str, list[str]], dates: dict[str, datetime], cwd: Path) -> None:
    negated = token.startswith("-")
    key, _, value = token.lstrip("-").partition(":")
    value = value.strip('"').strip()
    if not value:
        raise QueryError(f"{token!r}: the filter has no value; write e.g. {key}:{_EXAMPLES[key]}")
    if key in ("after", "before"):
        if negated:
            raise QueryError(f"{token!r}: a date filter cannot be negated; use the other one ({'before' if key == 'after' else 'after'}:)")
        dates[key] = parse_date(key, value)
        return
    normal = {"tag": normalize_tag, "ext": normalize_ext, "camera": str.lower, "in": str,
              "folder": lambda v: _folder(v, cwd)}[key](value)
    plural = {"tag": "tags", "folder": "folders", "ext": "exts", "camera": "cameras", "in": "collections"}[key]
    if negated and key == "camera":
        raise QueryError(f"{token!r}: a camera filter cannot be negated")
    filters[("not_" if negated else "") + plural].append(normal)


_EXAMPLES = {"tag": "dog", "folder": "~/Pictures/2020", "in": "holidays", "ext": "png", "after": "2020-01-01",
             "before": "2021-06", "camera": "canon"}


def _folder(value: str, cwd: Path) -> str:
    """A folder as the catalog stores it: absolute, symlinks resolved."""
    expanded = os.path.expanduser(value)
    return os.path.realpath(expanded if os.path.isabs(expanded) else os.path.join(cwd, expanded))


def parse_date(key: str, value: str) -> datetime:
    for fmt in ("%Y-%m-%d", "%Y-%m", "%Y"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise QueryError(f"{key}:{value} is not a date; write {key}:YYYY-MM-DD, {key}:YYYY-MM or {key}:YYYY")
