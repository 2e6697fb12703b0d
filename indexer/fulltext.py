"""The tantivy full-text index: BM25 over tags, descriptions, OCR text, names and metadata.

Tokenized fields carry the words; raw fields (``tag``, ``folders``, ``ext``) carry exact values
for filters; ``date`` (EXIF capture time, else the file's mtime) is a fast date field for ranges
and ordering; ``cjk`` repeats the text through a 2-gram tokenizer, because tantivy has no CJK
tokenizer and "고양이" must find "고양이가". Documents are keyed by the catalog id (``id``).

``fulltext/pixdex.json`` records the schema version and the catalog generation the index reflects.
A missing or different schema version means the index is moved aside and rebuilt from the
catalog (no inference) — never an error at open; the writer tops up whatever the catalog
committed after the recorded generation. Readers open it with `open_for_reading`, which creates
nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import shutil
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

import tantivy

from pixdex.indexer.catalog.rows import ImageRow
from pixdex.indexer.files import atomic_write, remove_stale_temps_in
from pixdex.indexer.layout import Layout
from pixdex.indexer.paths import display_path

log = logging.getLogger(__name__)

DELETE_CHUNK = 10_000  # ids per delete query
SCHEMA_VERSION = 12  # bump whenever _schema() or document() changes: the index is rebuilt from the catalog
# tantivy keeps dates as i64 nanoseconds: 1677-09-21 … 2262-04-11. Dates outside are dropped.
DATE_MIN, DATE_MAX = datetime(1678, 1, 1), datetime(2262, 1, 1)

FOLDED = "folded"  # the tokenizer of the word fields, registered on every open
TEXT_FIELDS = ("name", "folder", "tags", "description", "ocr", "metadata", "camera", "place")
BOOSTS = {"tags": 2.0, "name": 1.5, "description": 1.2}
CJK = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
EXT_ALIASES = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff", "heif": "heic"}


def normalize_ext(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    return EXT_ALIASES.get(ext, ext)


@functools.lru_cache(maxsize=65_536)  # the same keywords come back on image after image
def normalize_tag(tag: str) -> str:
    """A keyword as the `tag:` filter matches it: case, spacing, underscores and accents aside (a trial's
    tag:"zurich trip" found nothing tagged "Zürich trip")."""
    plain = "".join(c for c in unicodedata.normalize("NFD", tag) if not "\u0300" <= c <= "\u036f")  # Latin accents;
    # not the kana's voicing marks (か is not が)
    return " ".join(nfc(plain).replace("_", " ").lower().split())


def nfc(text: str) -> str:
    """One Unicode form for every text: macOS writes 바다 decomposed (NFD), a keyboard types it composed."""
    return unicodedata.normalize("NFC", text)


def words_of_name(name: str) -> str:
    """File and folder names as words: ``IMG_2041-beachDay.jpg`` → ``IMG 2041 beach Day jpg``."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return " ".join(re.split(r"[\W_]+", spaced)).strip()


@functools.lru_cache(maxsize=4096)  # a library's folders, each met image after image
def _folder_fields(folder: str) -> tuple[str, tuple[str, ...]]:
    """The `folder` field's words and the `folders` values (the folder and every one above it) of a file in
    `folder`."""
    path = PurePosixPath(folder or ".")
    parents = (str(path), *(str(p) for p in path.parents)) if folder else (".",)
    return nfc(" ".join(words_of_name(p) for p in path.parts[1:])), parents


def _suffix(name: str) -> str:
    """`PurePosixPath(name).suffix`, without the object."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def in_date_range(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    value = value.replace(tzinfo=None)
    return value if DATE_MIN <= value < DATE_MAX else None


def mtime_date(mtime_ns: int) -> datetime | None:
    try:
        return in_date_range(datetime.fromtimestamp(mtime_ns / 1e9))
    except (OverflowError, OSError, ValueError):
        return None


@dataclass
class TextDoc:
    id: int
    path: str  # for display; the catalog holds the exact bytes
    tags: list[str] = field(default_factory=list)
    description: str = ""
    ocr: str = ""  # the text read in the image: the OCR model's, then the vision LLM's
    metadata: str = ""
    place: str = ""  # city, state, country, country code: the person's and GeoNames' (`place:`)
    lens: str = ""
    label: str = ""  # the colour label (xmp:Label), for `label:`
    numbers: dict[str, int] = field(default_factory=dict)  # rating, iso, w, h
    lat: float | None = None
    lon: float | None = None
    camera: str = ""
    date: datetime | None = None


def doc_of_row(row: ImageRow) -> TextDoc:
    """The text document of a catalog row: everything tantivy holds is derived from the catalog."""
    taken = None
    if row.taken:
        try:
            taken = in_date_range(datetime.fromisoformat(row.taken))
        except ValueError:
            taken = None
    facts = row.fact_dict
    numbers = {"w": row.width, "h": row.height, "rating": facts.get("rating"), "iso": facts.get("iso")}
    llm = row.llm_dict
    read = "\n".join(t for t in (row.ocr_text, str(llm.get("text") or "")) if t)
    return TextDoc(id=row.id, path=display_path(row.path), tags=[str(t["name"]) for t in row.tag_list],
                   description=str(llm.get("description") or ""), ocr=read, place=_place_words(facts),
                   metadata=row.metadata, camera=row.camera or "", date=taken or mtime_date(row.mtime_ns),
                   lens=str(facts.get("lens") or ""), label=str(facts.get("label") or ""),
                   numbers={k: int(v) for k, v in numbers.items() if isinstance(v, int | float | str)},
                   lat=_float(facts.get("lat")), lon=_float(facts.get("lon")))


def _place_words(facts: dict[str, object]) -> str:
    """The place an image shows (the person's, GeoNames' where they have none) and GeoNames' own, once each."""
    words: list[str] = []
    for key in ("place", "geo"):
        found = facts.get(key)
        if isinstance(found, dict):
            words += [str(v) for v in found.values() if v]
    return " ; ".join(dict.fromkeys(words))


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def orientation_of(width: int | None, height: int | None) -> str:
    """landscape, portrait or square (within 2 %), from the size as displayed (EXIF orientation applied)."""
    if not width or not height:
        return ""
    if abs(width - height) <= 0.02 * max(width, height):
        return "square"
    return "landscape" if width > height else "portrait"


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("id", stored=True, indexed=True, fast=True)
    builder.add_text_field("path", stored=True, tokenizer_name="raw", index_option="basic")
    for name in TEXT_FIELDS:
        builder.add_text_field(name, stored=name in ("tags", "camera"), tokenizer_name=FOLDED)
    builder.add_text_field("cjk", tokenizer_name="cjk_bigram")
    builder.add_text_field("tag", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("folders", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("ext", tokenizer_name="raw", index_option="basic")
    builder.add_date_field("date", stored=True, indexed=True, fast=True)
    # The lens and camera as one folded line each, for `lens:` and `camera:` as people type them (line_pattern).
    builder.add_text_field("lens", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("camera_line", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("orientation", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("label", tokenizer_name="raw", index_option="basic")
    for name in NUMBER_FIELDS:
        builder.add_integer_field(name, indexed=True, fast=True)
    builder.add_float_field("lat", indexed=True, fast=True)
    builder.add_float_field("lon", indexed=True, fast=True)
    return builder.build()


NUMBER_FIELDS = ("rating", "iso", "w", "h")


def _folding() -> tantivy.TextAnalyzer:
    # tantivy's "default" (words, at most 40 bytes, lower case) and then ASCII folding, as Lucene's
    # ASCIIFoldingFilter: "Straße" is "strasse", "Zürich" "zurich", "Café" "cafe" — typed either way.
    return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(40)) \
        .filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.ascii_fold()).build()


_FOLDING = _folding()


_LINE = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.raw()).filter(tantivy.Filter.lowercase()) \
    .filter(tantivy.Filter.ascii_fold()).build()


def folded_line(text: str) -> str:
    """A whole value (a lens, a camera) folded as the word fields fold words: `Canon EOS 5D Mark Ⅱ` → `canon eos
    5d mark ii`, with its spaces collapsed."""
    return " ".join("".join(_LINE.analyze(nfc(text))).split())


_NAME_HYPHEN = re.compile(r"(?<=[a-z])-(?=[a-z0-9])|(?<=[a-z0-9])-(?=[a-z])")


@functools.lru_cache(maxsize=4096)  # cameras and lenses: a few per library
def lines_of(value: str) -> tuple[str, ...]:
    """A camera's or lens's folded line, and the same without the hyphens its model name has beside a letter, as
    people type it (`X-T3` is found as `xt3`, `EF-S` as `efs`; `24-70` keeps its hyphen)."""
    line = folded_line(value)
    compact = _NAME_HYPHEN.sub("", line)
    return (line,) if compact == line else (line, compact)


def line_pattern(value: str) -> str:
    """The regular expression a folded line matches when it holds `value` as people type it: each word in order,
    a word starting where one starts — a number also inside a word (`50mm` in `ef50mm`), and not inside a longer
    number (`50mm` is not `150mm`, `1.8` not `1.85`); a word may be the start of a longer one (`ef50` is `ef50mm`).
    """
    pattern = []
    for word in folded_line(value).split():
        numeric = word[0].isdigit() or word[0] == "."
        pattern.append("(?:|.*[^0-9.])" if numeric else "(?:|.*[^a-z0-9])" if word[0].isalnum() else "(?:|.*)")
        pattern.append("".join(f"\\{c}" if c.isascii() and not c.isalnum() else c for c in word))
        pattern.append("(?:[^0-9.].*)?" if word[-1].isdigit() else ".*")
    return "".join(pattern)


def _register_tokenizers(index: tantivy.Index) -> None:
    # tantivy forgets custom tokenizers on every open; register them each time.
    analyzer = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.ngram(2, 2, False)) \
        .filter(tantivy.Filter.lowercase()).build()
    index.register_tokenizer("cjk_bigram", analyzer)
    index.register_tokenizer(FOLDED, _folding())


def read_manifest(layout: Layout) -> dict[str, int]:
    try:
        value = json.loads(layout.fulltext_manifest.read_text())
        return {"schema": int(value["schema"]), "generation": int(value["generation"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {"schema": 0, "generation": 0}


def open_for_reading(layout: Layout) -> tantivy.Index | None:
    """The text index as it is on disk, or None when it is absent or of another schema (creates nothing)."""
    if read_manifest(layout)["schema"] != SCHEMA_VERSION:
        return None
    try:
        index = tantivy.Index.open(str(layout.fulltext))
    except ValueError:
        return None
    _register_tokenizers(index)
    return index


class FullText:
    """The writer's side of the text index."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.schema = _schema()
        manifest = read_manifest(layout)
        self.reset_reason: str | None = None
        if manifest["schema"] != SCHEMA_VERSION:
            if layout.fulltext.exists():
                self.reset_reason = (f"text index schema {manifest['schema'] or 'unknown'} is not "
                                     f"{SCHEMA_VERSION}: rebuilding it from the catalog")
                log.warning("%s", self.reset_reason)
                aside = layout.fulltext.with_name(f"fulltext.old-{time.time_ns()}")
                layout.fulltext.rename(aside)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                self.reset_reason = "no text index yet: building it from the catalog"
            manifest = {"schema": SCHEMA_VERSION, "generation": 0}
        layout.fulltext.mkdir(parents=True, exist_ok=True)
        remove_stale_temps_in(layout.fulltext)  # a manifest write cut short by a crash
        self.generation = manifest["generation"]
        self.index = tantivy.Index(self.schema, path=str(layout.fulltext), reuse=True)
        _register_tokenizers(self.index)
        self._writer: tantivy.IndexWriter | None = None

    @property
    def writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            self._writer = self.index.writer(heap_size=64_000_000, num_threads=1)
        return self._writer

    def document(self, doc: TextDoc) -> tantivy.Document:
        name = doc.path.rpartition("/")[2]
        folder_words, parents = _folder_fields(doc.path[:len(doc.path) - len(name)].rstrip("/") or
                                               ("/" if doc.path.startswith("/") else ""))
        out = tantivy.Document()
        out.add_unsigned("id", doc.id)
        out.add_text("path", doc.path)
        out.add_text("name", nfc(words_of_name(name)))
        out.add_text("folder", folder_words)
        for parent in parents:
            out.add_text("folders", parent)
        out.add_text("ext", normalize_ext(_suffix(name)))
        out.add_text("tags", nfc(" ; ".join(doc.tags)))
        for tag in doc.tags:
            out.add_text("tag", normalize_tag(tag))
        out.add_text("description", nfc(doc.description))
        out.add_text("ocr", nfc(doc.ocr))
        out.add_text("metadata", nfc(doc.metadata))
        out.add_text("place", nfc(doc.place))
        out.add_text("camera", doc.camera)
        for line in lines_of(doc.camera):
            out.add_text("camera_line", line)
        out.add_text("cjk", nfc(" ".join([name, *doc.tags, doc.description, doc.ocr, doc.metadata, doc.place])))
        date = in_date_range(doc.date)
        if date is not None:
            out.add_date("date", date)
        for line in lines_of(doc.lens):
            out.add_text("lens", line)
        out.add_text("orientation", orientation_of(doc.numbers.get("w"), doc.numbers.get("h")))
        if doc.label:
            out.add_text("label", folded_line(doc.label))
        for key, value in doc.numbers.items():
            out.add_integer(key, value)
        if doc.lat is not None and doc.lon is not None:
            out.add_float("lat", doc.lat)
            out.add_float("lon", doc.lon)
        return out

    def upsert(self, docs: list[TextDoc]) -> None:
        self.remove([doc.id for doc in docs])
        for doc in docs:
            self.writer.add_document(self.document(doc))

    def remove(self, ids: list[int]) -> None:
        # One delete for all of them (a term-set query on the id: delete_documents_by_term silently deletes
        # nothing on an unsigned field in tantivy-py 0.27). Documents added after it in this commit stay.
        for start in range(0, len(ids), DELETE_CHUNK):
            self.writer.delete_documents_by_query(
                tantivy.Query.term_set_query(self.schema, "id", ids[start:start + DELETE_CHUNK]))

    def clear(self) -> None:
        self.writer.delete_all_documents()

    def rollback(self) -> None:
        if self._writer is not None:
            self._writer.rollback()

    def commit(self, generation: int) -> None:
        """Make the changes durable, then record that the index reflects the catalog at `generation`."""
        if self._writer is not None:
            self._writer.commit()
            self._writer.wait_merging_threads()
            self._writer = None
        if generation != self.generation:
            atomic_write(self.layout.fulltext_manifest,
                         json.dumps({"schema": SCHEMA_VERSION, "generation": generation}).encode())
            self.generation = generation
        self.index.reload()


def text_query(index: tantivy.Index, text: str) -> tantivy.Query:
    """The words and "phrases" over every word field; words of `FUZZY_MIN` letters or more also find the text
    read in images one typo away (OCR misreads: "buixotic" for "quixotic"), ranked below exact matches."""
    words = plain_words(text)
    fields = list(TEXT_FIELDS) + (["cjk"] if CJK.search(words) else [])
    query, _errors = index.parse_query_lenient(words, fields, field_boosts=BOOSTS)
    single = re.sub(r'"[^"]*"', " ", words).split()
    fuzzy = [t for w in single for t in fold_words(w) if len(t) >= FUZZY_MIN]
    if not fuzzy:
        return query
    typos = tantivy.Query.boolean_query([(tantivy.Occur.Should, q) for q in fuzzy_terms(index.schema, "ocr", fuzzy)])
    return tantivy.Query.boolean_query([(tantivy.Occur.Should, query),
                                        (tantivy.Occur.Should, tantivy.Query.boost_query(typos, FUZZY_BOOST))])


FUZZY_MIN = 5  # letters: shorter words are too often one edit from another word
FUZZY_BOOST = 0.3  # a fuzzy match scores a constant; this keeps it below any exact match's BM25 plus it


def fold_words(text: str) -> list[str]:
    """The words of `text` as the word fields index them (lower case, ASCII-folded)."""
    return [t for t in _FOLDING.analyze(nfc(text)) if t]


def fuzzy_terms(schema: tantivy.Schema, field: str, tokens: list[str]) -> list[tantivy.Query]:
    """Each token within one edit (a transposition counts one) in `field`."""
    return [tantivy.Query.fuzzy_term_query(schema, field, t, distance=1, transposition_cost_one=True) for t in tokens]


def field_words_query(schema: tantivy.Schema, field: str, value: str, fuzzy: bool = False) -> tantivy.Query:
    """A filter on one word field: `value`'s words in a row (a phrase); with `fuzzy`, each word of `FUZZY_MIN`
    letters or more may be one edit away, in any order."""
    tokens = fold_words(value)
    if not tokens:
        return tantivy.Query.boolean_query([(tantivy.Occur.MustNot, tantivy.Query.all_query())])
    words: list[str | tuple[int, str]] = list(tokens)
    exact = tantivy.Query.term_query(schema, field, tokens[0]) if len(tokens) == 1 else \
        tantivy.Query.phrase_query(schema, field, words)
    if not fuzzy:
        return exact
    each = [tantivy.Query.fuzzy_term_query(schema, field, t, distance=1) if len(t) >= FUZZY_MIN
            else tantivy.Query.term_query(schema, field, t) for t in tokens]
    loose = tantivy.Query.boolean_query([(tantivy.Occur.Must, q) for q in each])
    return tantivy.Query.boolean_query([(tantivy.Occur.Should, exact), (tantivy.Occur.Should, loose)])


NOT_A_WORD = re.compile(r"[^\w\s]|_")  # the tokenizers split there too: nothing a word could match is lost


def plain_words(text: str) -> str:
    """Words and "phrases" only: what tantivy's query language would read as syntax (`*` for everything,
    `field:`, `^2`, `AND`, brackets) becomes the space its tokenizer splits words at anyway."""
    out = []
    for n, part in enumerate(re.split(r'"([^"]*)"', text)):
        if n % 2:  # inside quotes
            words = " ".join(NOT_A_WORD.sub(" ", part).lower().split())
            if words:
                out.append(f'"{words}"')
            continue
        for word in part.split():  # "e-mail", "RIGHT1of2-XMP-Keywords": its pieces in a row, as a phrase
            pieces = NOT_A_WORD.sub(" ", word).lower().split()
            if pieces:
                out.append(pieces[0] if len(pieces) == 1 else '"' + " ".join(pieces) + '"')
    return " ".join(out)
