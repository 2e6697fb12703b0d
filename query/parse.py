"""Query strings → `Query`: free text, "exact phrases", +/- arithmetic and filters.

    beach + sunset - people tag:dog -tag:cat folder:~/Pictures ext:png after:2020-01-01
    before:2021 camera:canon "golden hour" in:holidays rating:>=3 label:red iso:>=1600 lens:50mm w:>3000
    orientation:portrait near:48.85,2.35,5 near:48.8,2.2,48.9,2.4 text:receipt place:"cape town"

``in:NAME`` narrows to a collection (a named watched folder); the service resolves names to folders.
Numbers (``rating:``, ``iso:``, ``w:``, ``h:``) take N, >=N, >N, <=N, <N or N..M. ``near:LAT,LON,KM``
is the square KM north, south, east and west of the point (not a circle: corners reach 1.4 × KM);
``near:S,W,N,E`` a box. ``orientation:`` is landscape, portrait or square, as the image is displayed.
``label:`` is the colour label (xmp:Label): red, yellow, green, blue or purple.
``text:`` searches only the text read in the images (a word of 5+ letters also one typo away: OCR misreads);
``place:`` only their place (city, state, country, country code: the person's and GeoNames').

Filters restrict both the vector side and the text side. ``after:`` is inclusive from the start
of its day (or month, or year); ``before:`` is exclusive from the start of its period.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pixdex.indexer.errors import PixdexError
from pixdex.indexer.fulltext import nfc, normalize_ext, normalize_tag
from pixdex.indexer.sidecars.keys import LABELS

FILTER_KEYS = ("tag", "folder", "in", "ext", "after", "before", "camera", "lens", "rating", "label", "iso", "w",
               "h", "orientation", "near", "text", "place")
NUMBER_KEYS = ("rating", "iso", "w", "h")
ORIENTATIONS = ("landscape", "portrait", "square")
COLOURS = tuple(label.lower() for label in LABELS)
NUMBER = re.compile(r"^(?:(?P<op>>=|<=|>|<|=)?(?P<n>-?\d+)|(?P<lo>-?\d+)\.\.(?P<hi>-?\d+))$")
TOKEN = re.compile(
    r'(?P<filter>-?(?:' + "|".join(FILTER_KEYS) + r'):(?:"[^"]*"|\S*))'
    r'|(?P<phrase>"[^"]*")'
    r'|(?P<op>(?<!\S)[+-](?!\S))'
    r'|(?P<word>\S+)')


UNKNOWN_FILTER = re.compile(r"-?([A-Za-z]+):\S")


class QueryError(PixdexError, ValueError):
    """A query that cannot be run, with what to write instead."""


def nothing_to_look_for(raw: str) -> str:
    return f"{raw!r}: nothing to look for; type words, \"a phrase\" or a filter such as tag:dog"


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
    lenses: tuple[str, ...] = ()
    numbers: tuple[tuple[str, int | None, int | None], ...] = ()  # (field, lowest, highest), inclusive
    not_numbers: tuple[tuple[str, int | None, int | None], ...] = ()
    orientations: tuple[str, ...] = ()
    not_orientations: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # label:red, the colour label (any of them)
    not_labels: tuple[str, ...] = ()
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # south, west, north, east (degrees)
    texts: tuple[str, ...] = ()  # text:WORDS, in the text read in the image
    not_texts: tuple[str, ...] = ()
    places: tuple[str, ...] = ()  # place:NAME
    not_places: tuple[str, ...] = ()

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
    filters: dict[str, list[Any]] = {k: [] for k in Filters.__dataclass_fields__
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
            phrase = nfc(value.strip('"').strip())
            if phrase:
                segments[-1][1].append(phrase)
                if segments[-1][0] == "+":
                    text_parts.append(f'"{phrase}"')
        else:
            word = nfc(value.strip('"'))
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


def _add_filter(token: str, filters: dict[str, list[Any]], dates: dict[str, datetime], cwd: Path) -> None:
    negated = token.startswith("-")
    key, _, value = token.lstrip("-").partition(":")
    value = value.strip('"').strip()
    if not value:
        raise QueryError(f"{token!r}: the filter has no value; write e.g. {key}:{_EXAMPLES[key]}")
    if key in ("after", "before"):
        if negated:
            other = "before" if key == "after" else "after"
            raise QueryError(f"{token!r}: a date filter cannot be negated; use the other one ({other}:)")
        dates[key] = parse_date(key, value)
        return
    if key in NUMBER_KEYS:
        filters["not_numbers" if negated else "numbers"].append(_number_range(token, key, value))
        return
    if key == "near":
        if negated:
            raise QueryError(f"{token!r}: a place filter cannot be negated")
        filters["boxes"].append(_box(token, value))
        return
    if key == "orientation":
        if value.lower() not in ORIENTATIONS:
            raise QueryError(f"{token!r}: orientation is one of {', '.join(ORIENTATIONS)}")
        filters[("not_" if negated else "") + "orientations"].append(value.lower())
        return
    if key == "label":
        if value.lower() not in COLOURS:
            raise QueryError(f"{token!r}: label is a colour label: {', '.join(COLOURS)}")
        filters[("not_" if negated else "") + "labels"].append(value.lower())
        return
    normalizers: dict[str, Callable[[str], str]] = {
        "tag": normalize_tag, "ext": normalize_ext, "camera": str.lower, "lens": str.lower, "in": str, "text": nfc,
        "place": nfc, "folder": lambda v: _folder(v, cwd)}
    normal = normalizers[key](value)
    plural = {"tag": "tags", "folder": "folders", "ext": "exts", "camera": "cameras", "lens": "lenses",
              "in": "collections", "text": "texts", "place": "places"}[key]
    if negated and key in ("camera", "lens"):
        raise QueryError(f"{token!r}: a {key} filter cannot be negated")
    filters[("not_" if negated else "") + plural].append(normal)


def _number_range(token: str, key: str, value: str) -> tuple[str, int | None, int | None]:
    """`3`, `>=3`, `>3`, `<3`, `<=3`, `3..5` → (key, lowest, highest), both inclusive."""
    match = NUMBER.match(value)
    if match is None:
        raise QueryError(f"{token!r}: write {key}:N, {key}:>=N, {key}:<N or {key}:N..M (whole numbers)")
    if any(len(match[g].lstrip("-")) > 15 for g in ("n", "lo", "hi") if match[g] is not None):
        raise QueryError(f"{token!r}: {key} takes whole numbers of at most 15 digits")
    low: int | None
    high: int | None
    if match["lo"] is not None:
        low, high = int(match["lo"]), int(match["hi"])
        if low > high:
            raise QueryError(f"{token!r}: {low} is above {high}; write {key}:{high}..{low}")
    else:
        n, op = int(match["n"]), match["op"] or "="
        low, high = {"=": (n, n), ">=": (n, None), ">": (n + 1, None), "<=": (None, n), "<": (None, n - 1)}[op]
    if key == "rating" and ((low is not None and low > 5) or (high is not None and high < -1)):
        raise QueryError(f"{token!r}: a rating is 0 (none) to 5 stars, or -1 (rejected)")
    return key, low, high


def _box(token: str, value: str) -> tuple[float, float, float, float]:
    """near:LAT,LON,KM → the square of KM around the point (north, south, east and west); near:S,W,N,E → that box."""
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) == 3:
        lat, lon, km = numbers
        if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < km <= 20_000):
            raise QueryError(f"{token!r}: latitude −90…90, longitude −180…180, distance above 0 and at most "
                             "20000 km")
        dlat = km / 111.32
        dlon = km / max(111.32 * math.cos(math.radians(lat)), 1e-6)
        if dlon >= 180:  # near a pole, or a distance around the globe: every longitude
            return max(lat - dlat, -90.0), -180.0, min(lat + dlat, 90.0), 180.0
        west, east = lon - dlon, lon + dlon  # across the antimeridian the box wraps (west > east)
        west += 360.0 if west < -180 else 0.0
        east -= 360.0 if east > 180 else 0.0
        return max(lat - dlat, -90.0), west, min(lat + dlat, 90.0), east
    if len(numbers) == 4:
        south, west, north, east = numbers
        if not (-90 <= south <= north <= 90 and -180 <= west <= 180 and -180 <= east <= 180):
            raise QueryError(f"{token!r}: a box is south,west,north,east in degrees, south below north (west above "
                             "east crosses the 180° meridian)")
        return south, west, north, east
    raise QueryError(f"{token!r}: write near:LAT,LON,KM (e.g. near:48.85,2.35,5) or near:SOUTH,WEST,NORTH,EAST")


_EXAMPLES = {"tag": "dog", "folder": "~/Pictures/2020", "in": "holidays", "ext": "png", "after": "2020-01-01",
             "before": "2021-06", "camera": "canon", "lens": "50mm", "rating": ">=3", "label": "red", "iso": ">=1600",
             "w": ">3000", "h": "<=1080", "orientation": "portrait", "near": "48.85,2.35,5", "text": "receipt",
             "place": "paris"}


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
