"""The tantivy full-text index: BM25 over tags, descriptions, OCR text, names and metadata.

Tokenized fields carry the words; raw fields (``tag``, ``folders``, ``ext``) carry exact values
for filters; ``date`` (EXIF capture time, else the file's mtime) is a fast date field for ranges
and ordering; ``cjk`` repeats the text through a 2-gram tokenizer, because tantivy has no CJK
tokenizer and "고양이" must find "고양이가". Documents are keyed by the catalog id (``id``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

import tantivy

TEXT_FIELDS = ("name", "folder", "tags", "description", "ocr", "metadata", "camera")
BOOSTS = {"tags": 2.0, "name": 1.5, "description": 1.2}
CJK = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
EXT_ALIASES = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff", "heif": "heic"}


def normalize_ext(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    return EXT_ALIASES.get(ext, ext)


def normalize_tag(tag: str) -> str:
    return " ".join(tag.replace("_", " ").lower().split())


def words_of_name(name: str) -> str:
    """File and folder names as words: ``IMG_2041-beachDay.jpg`` → ``IMG 2041 beach Day jpg``."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return " ".join(re.split(r"[\W_]+", spaced)).strip()


@dataclass
class TextDoc:
    id: int
    path: str  # for display; the catalog holds the exact bytes
    tags: list[str] = field(default_factory=list)
    description: str = ""
    ocr: str = ""
    metadata: str = ""
    camera: str = ""
    date: datetime | None = None


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("id", stored=True, indexed=True, fast=True)
    builder.add_text_field("path", stored=True, tokenizer_name="raw", index_option="basic")
    for name in TEXT_FIELDS:
        builder.add_text_field(name, stored=name in ("tags", "camera"))
    builder.add_text_field("cjk", tokenizer_name="cjk_bigram")
    builder.add_text_field("tag", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("folders", tokenizer_name="raw", index_option="basic")
    builder.add_text_field("ext", tokenizer_name="raw", index_option="basic")
    builder.add_date_field("date", stored=True, indexed=True, fast=True)
    return builder.build()


def _register_tokenizers(index: tantivy.Index) -> None:
    # tantivy forgets custom tokenizers on every open; register them each time.
    analyzer = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.ngram(2, 2, False)) \
        .filter(tantivy.Filter.lowercase()).build()
    index.register_tokenizer("cjk_bigram", analyzer)


class FullText:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.schema = _schema()
        self.index = tantivy.Index(self.schema, path=str(directory), reuse=True)
        _register_tokenizers(self.index)
        self._writer: tantivy.IndexWriter | None = None

    @property
    def writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            self._writer = self.index.writer(heap_size=64_000_000, num_threads=1)
        return self._writer

    def document(self, doc: TextDoc) -> tantivy.Document:
        path = PurePosixPath(doc.path)
        out = tantivy.Document()
        out.add_unsigned("id", doc.id)
        out.add_text("path", doc.path)
        out.add_text("name", words_of_name(path.name))
        out.add_text("folder", " ".join(words_of_name(p) for p in path.parent.parts[1:]))
        for parent in path.parents:
            out.add_text("folders", str(parent))
        out.add_text("ext", normalize_ext(path.suffix))
        out.add_text("tags", " ; ".join(doc.tags))
        for tag in doc.tags:
            out.add_text("tag", normalize_tag(tag))
        out.add_text("description", doc.description)
        out.add_text("ocr", doc.ocr)
        out.add_text("metadata", doc.metadata)
        out.add_text("camera", doc.camera)
        out.add_text("cjk", " ".join([path.name, *doc.tags, doc.description, doc.ocr, doc.metadata]))
        if doc.date is not None:
            out.add_date("date", doc.date)
        return out

    def _delete(self, image_id: int) -> None:
        # delete_documents_by_term("id", n) silently deletes nothing on an unsigned field (tantivy-py
        # 0.27 builds a signed term); a term query on the same field does match.
        self.writer.delete_documents_by_query(tantivy.Query.term_query(self.schema, "id", image_id))

    def upsert(self, docs: list[TextDoc]) -> None:
        for doc in docs:
            self._delete(doc.id)
            self.writer.add_document(self.document(doc))

    def remove(self, ids: list[int]) -> None:
        for image_id in ids:
            self._delete(image_id)

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.commit()
            self._writer.wait_merging_threads()
            self._writer = None
        self.index.reload()

    def searcher(self) -> tantivy.Searcher:
        return self.index.searcher()

    def num_docs(self) -> int:
        return int(self.searcher().num_docs)

    def text_query(self, text: str) -> tantivy.Query:
        fields = list(TEXT_FIELDS) + (["cjk"] if CJK.search(text) else [])
        query, _errors = self.index.parse_query_lenient(text, fields, field_boosts=BOOSTS)
        return query
