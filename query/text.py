"""The text side: BM25 over the tantivy index, and filters as tantivy queries.

The same filter query restricts the text side (as a MUST clause) and, through `matching_ids`,
the vector side, so a filter never lets a hit in on one side that the other would refuse.
"""

from __future__ import annotations

import re
from datetime import timedelta

import tantivy

from pixdex.indexer.fulltext import FullText
from pixdex.query.parse import Filters

Occur = tantivy.Occur


def filter_query(fulltext: FullText, filters: Filters) -> tantivy.Query | None:
    schema = fulltext.schema
    must: list[tantivy.Query] = []
    must_not: list[tantivy.Query] = []

    def any_of(field: str, values: tuple[str, ...]) -> tantivy.Query:
        terms = [tantivy.Query.term_query(schema, field, v) for v in values]
        return terms[0] if len(terms) == 1 else tantivy.Query.boolean_query([(Occur.Should, t) for t in terms])

    must += [tantivy.Query.term_query(schema, "tag", t) for t in filters.tags]
    must_not += [tantivy.Query.term_query(schema, "tag", t) for t in filters.not_tags]
    if filters.folders:
        must.append(any_of("folders", filters.folders))
    must_not += [tantivy.Query.term_query(schema, "folders", f) for f in filters.not_folders]
    if filters.exts:
        must.append(any_of("ext", filters.exts))
    must_not += [tantivy.Query.term_query(schema, "ext", e) for e in filters.not_exts]
    for camera in filters.cameras:
        words = re.findall(r"\w+", camera)
        must += [tantivy.Query.term_query(schema, "camera", w) for w in words]
    if filters.after or filters.before:
        upper = filters.before - timedelta(microseconds=1) if filters.before else None
        must.append(tantivy.Query.range_query(schema, "date", tantivy.FieldType.Date, filters.after, upper))
    if not must and not must_not:
        return None
    if not must:
        must.append(tantivy.Query.all_query())
    return tantivy.Query.boolean_query([(Occur.Must, q) for q in must] + [(Occur.MustNot, q) for q in must_not])


def _ids(fulltext: FullText, searcher: tantivy.Searcher, query: tantivy.Query, limit: int,
         **order: object) -> list[tuple[int, float]]:
    result = searcher.search(query, limit, count=False, **order)
    addresses = [address for _, address in result.hits]
    ids = searcher.fast_field_values("id", addresses) if addresses else []
    return [(int(i), float(score) if isinstance(score, float) else 0.0)
            for i, (score, _) in zip(ids, result.hits, strict=True)]


def text_hits(fulltext: FullText, text: str, filters: Filters, count: int) -> list[tuple[int, float]]:
    """BM25 hits for `text`, restricted by `filters`, best first."""
    if not text.strip():
        return []
    searcher = fulltext.searcher()
    query = fulltext.text_query(text)
    restrict = filter_query(fulltext, filters)
    if restrict is not None:
        query = tantivy.Query.boolean_query([(Occur.Must, query), (Occur.Must, restrict)])
    return _ids(fulltext, searcher, query, count)


def matching_ids(fulltext: FullText, filters: Filters) -> set[int] | None:
    """Every id the filters let through, or None when there are no filters."""
    restrict = filter_query(fulltext, filters)
    if restrict is None:
        return None
    searcher = fulltext.searcher()
    return {i for i, _ in _ids(fulltext, searcher, restrict, max(1, searcher.num_docs))}


def newest(fulltext: FullText, filters: Filters, count: int) -> list[tuple[int, float]]:
    """Filter-only queries: the matching images, newest first."""
    restrict = filter_query(fulltext, filters) or tantivy.Query.all_query()
    return _ids(fulltext, fulltext.searcher(), restrict, count, order_by_field="date")
