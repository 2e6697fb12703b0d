"""The text side: BM25 over the tantivy index, and filters as tantivy queries.

The same filter query restricts the text side (as a MUST clause) and, through `restriction`,
the vector side, so a filter never lets a hit in on one side that the other would refuse.
Every function searches one `TextSnapshot` (one searcher per query).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import tantivy

from pixdex.indexer.fulltext import DATE_MAX, DATE_MIN, field_words_query, line_pattern, normalize_tag, text_query
from pixdex.indexer.vectors import Admit
from pixdex.query.parse import Filters
from pixdex.query.reader import TextSnapshot

Occur = tantivy.Occur


def _date_range(schema: tantivy.Schema, after: datetime | None, before: datetime | None) -> tantivy.Query:
    """Dates beyond what the index can hold (1678–2261) are clamped to its edges: no date in the
    index lies outside them, so the query means the same."""
    lower = min(max(after, DATE_MIN), DATE_MAX) if after else None
    upper = min(max(before, DATE_MIN), DATE_MAX) - timedelta(microseconds=1) if before else None
    if lower is not None and upper is not None and lower > upper:
        return tantivy.Query.boolean_query([(Occur.MustNot, tantivy.Query.all_query())])
    return tantivy.Query.range_query(schema, "date", tantivy.FieldType.Date, lower, upper)


def _number_range(schema: tantivy.Schema, name: str, low: int | None, high: int | None) -> tantivy.Query:
    if low is not None and high is not None and low > high:
        return tantivy.Query.boolean_query([(Occur.MustNot, tantivy.Query.all_query())])
    return tantivy.Query.range_query(schema, name, tantivy.FieldType.Integer, low, high)


def _box(schema: tantivy.Schema, south: float, west: float, north: float, east: float) -> tantivy.Query:
    lat = tantivy.Query.range_query(schema, "lat", tantivy.FieldType.Float, south, north)
    if west <= east:
        lon = tantivy.Query.range_query(schema, "lon", tantivy.FieldType.Float, west, east)
    else:  # across the antimeridian
        lon = tantivy.Query.boolean_query([
            (Occur.Should, tantivy.Query.range_query(schema, "lon", tantivy.FieldType.Float, west, 180.0)),
            (Occur.Should, tantivy.Query.range_query(schema, "lon", tantivy.FieldType.Float, -180.0, east))])
    return tantivy.Query.boolean_query([(Occur.Must, lat), (Occur.Must, lon)])


def filter_query(schema: tantivy.Schema, filters: Filters) -> tantivy.Query | None:
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
    for group in filters.within:  # a group with no folder (a token limited to nothing) matches nothing
        must.append(any_of("folders", group) if group else tantivy.Query.boolean_query(
            [(Occur.MustNot, tantivy.Query.all_query())]))
    if filters.exts:
        must.append(any_of("ext", filters.exts))
    must_not += [tantivy.Query.term_query(schema, "ext", e) for e in filters.not_exts]
    must += [tantivy.Query.regex_query(schema, "camera_line", line_pattern(c)) for c in filters.cameras]
    if filters.after or filters.before:
        must.append(_date_range(schema, filters.after, filters.before))
    must += [tantivy.Query.regex_query(schema, "lens", line_pattern(lens)) for lens in filters.lenses]
    must += [_number_range(schema, *spec) for spec in filters.numbers]
    must_not += [_number_range(schema, *spec) for spec in filters.not_numbers]
    if filters.orientations:
        must.append(any_of("orientation", filters.orientations))
    must_not += [tantivy.Query.term_query(schema, "orientation", o) for o in filters.not_orientations]
    if filters.labels:
        must.append(any_of("label", filters.labels))
    must_not += [tantivy.Query.term_query(schema, "label", label) for label in filters.not_labels]
    must += [_box(schema, *box) for box in filters.boxes]
    must += [field_words_query(schema, "ocr", t, fuzzy=True) for t in filters.texts]
    must_not += [field_words_query(schema, "ocr", t) for t in filters.not_texts]
    must += [field_words_query(schema, "place", p) for p in filters.places]
    must_not += [field_words_query(schema, "place", p) for p in filters.not_places]
    if not must and not must_not:
        return None
    if not must:
        must.append(tantivy.Query.all_query())
    return tantivy.Query.boolean_query([(Occur.Must, q) for q in must] + [(Occur.MustNot, q) for q in must_not])


def _ids(text: TextSnapshot, query: tantivy.Query, limit: int, order_by_field: str | None = None,
         ) -> list[tuple[int, float]]:
    result = text.searcher.search(query, limit, count=False, order_by_field=order_by_field)
    addresses = [address for _, address in result.hits]
    ids = text.searcher.fast_field_values("id", addresses) if addresses else []
    return [(int(i), float(score) if isinstance(score, float) else 0.0)
            for i, (score, _) in zip(ids, result.hits, strict=True) if i is not None]


RELATED_BOOST = 0.5  # an image tagged with a related concept ranks below one that has the word itself


def text_hits(text: TextSnapshot, words: str, filters: Filters, count: int, related: tuple[str, ...] = ()
              ) -> list[tuple[int, float]]:
    """BM25 hits for `words` — or for tags `related` to them ("animal" → dog, cat) — restricted by
    `filters`, best first."""
    if not words.strip():
        return []
    query = text_query(text.index, words)
    if related:
        tags = [(Occur.Should, tantivy.Query.term_query(text.schema, "tag", normalize_tag(t))) for t in related]
        query = tantivy.Query.boolean_query(
            [(Occur.Should, query), (Occur.Should, tantivy.Query.boost_query(tantivy.Query.boolean_query(tags),
                                                                            RELATED_BOOST))])
    restrict = filter_query(text.schema, filters)
    if restrict is not None:
        query = tantivy.Query.boolean_query([(Occur.Must, query), (Occur.Must, restrict)])
    return _ids(text, query, count)


NARROW = 5_000  # a filter that lets at most this many ids through is listed (an exact vector search over them)


def matching_ids(text: TextSnapshot, filters: Filters) -> set[int] | None:
    """Every id the filters let through, or None when there are no filters."""
    restrict = filter_query(text.schema, filters)
    if restrict is None:
        return None
    return {i for i, _ in _ids(text, restrict, max(1, text.searcher.num_docs))}


def restriction(text: TextSnapshot, filters: Filters, narrow: int | None = None) -> set[int] | Admit | None:
    """What the filters mean to the vector side, by how many ids they let through (tantivy counts them without
    listing them): a narrow filter's ids; a wide one's share of the library and a check of candidate ids."""
    restrict = filter_query(text.schema, filters)
    if restrict is None:
        return None
    matched = int(getattr(text.searcher.search(restrict, 1, count=True), "count", 0) or 0)  # missing from the stubs
    if matched <= (NARROW if narrow is None else narrow):
        return {i for i, _ in _ids(text, restrict, max(1, matched))}
    total = max(1, text.searcher.num_docs)

    def check(ids: list[int]) -> set[int]:
        if not ids:
            return set()
        among = tantivy.Query.term_set_query(text.schema, "id", ids)
        query = tantivy.Query.boolean_query([(Occur.Must, restrict), (Occur.Must, among)])
        return {i for i, _ in _ids(text, query, len(ids))}

    return Admit(matched / total, check)


def newest(text: TextSnapshot, filters: Filters, count: int) -> list[tuple[int, float]]:
    """Filter-only queries: the matching images, newest first."""
    restrict = filter_query(text.schema, filters) or tantivy.Query.all_query()
    return _ids(text, restrict, count, order_by_field="date")
