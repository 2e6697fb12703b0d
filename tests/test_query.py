"""Query parsing and Reciprocal Rank Fusion (pure functions)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pixdex.query.fuse import rrf
from pixdex.query.parse import QueryError, parse_query


def test_filters_phrases_and_words() -> None:
    q = parse_query('red car tag:long_hair -tag:Cat folder:~/x ext:JPEG after:2020-01 before:2021 '
                    'camera:"EOS 5D" "golden hour"', cwd=Path("/tmp"))
    assert q.positive == ("red car golden hour",)
    assert q.text == 'red car "golden hour"'
    f = q.filters
    assert f.tags == ("long hair",) and f.not_tags == ("cat",)
    assert f.folders == (str(Path("~/x").expanduser()),)
    assert f.exts == ("jpg",) and f.cameras == ("eos 5d",)
    assert f.after == datetime(2020, 1, 1) and f.before == datetime(2021, 1, 1)


def test_label_filters() -> None:
    f = parse_query("beach label:Red label:blue -label:GREEN").filters
    assert f.labels == ("red", "blue") and f.not_labels == ("green",)
    with pytest.raises(QueryError, match="label is a colour label: red, yellow, green, blue, purple"):
        parse_query("label:pink")


def test_relative_folder_is_resolved_against_cwd() -> None:
    assert parse_query("folder:pics/../holiday", cwd=Path("/home/a")).filters.folders == ("/home/a/holiday",)


def test_arithmetic_segments() -> None:
    q = parse_query("beach + sunset - people - dogs")
    assert q.positive == ("beach", "sunset") and q.negative == ("people", "dogs")
    assert q.text == "beach sunset"
    assert parse_query("well-known e-mail").positive == ("well-known e-mail",)


def test_only_filters_has_no_text() -> None:
    q = parse_query("tag:dog ext:png")
    assert not q.has_text and not q.filters.empty


@pytest.mark.parametrize("raw, message", [
    ("after:2020-13-01", "is not a date"),
    ("after:2021 before:2020", "is not before"),
    ("- people", "nothing to look for"),
    ("tag:", "has no value"),
    ("-after:2020", "cannot be negated"),
    ("rating:9", r"a rating is 0 \(none\) to 5 stars, or -1 \(rejected\)"),  # a trial: "no results", exit 1
    ("rating:>5", "a rating is 0"),
    ("rating:6..9", "a rating is 0"),
    ("rating:<-1", "a rating is 0"),
])
def test_bad_queries(raw: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(raw)


@pytest.mark.parametrize("raw", ["rating:5", "rating:>=4", "rating:0..9", "rating:-1", "rating:<1"])
def test_ratings_that_can_match(raw: str) -> None:
    assert [n[0] for n in parse_query(raw).filters.numbers] == ["rating"]


def test_unknown_prefix_is_just_a_word() -> None:
    assert parse_query("http://example color:red").positive == ("http://example color:red",)


def test_rrf_scores_and_parts() -> None:
    fused = rrf([(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 12.0), (4, 9.0)], k=60)
    by_id = {f.id: f for f in fused}
    assert by_id[3].score == pytest.approx(1 / 63 + 1 / 61)
    assert by_id[3].vector is not None and by_id[3].vector.rank == 3 and by_id[3].text.rank == 1  # type: ignore[union-attr]
    assert by_id[4].vector is None and by_id[4].score == pytest.approx(1 / 62)
    assert [f.id for f in fused] == [3, 1, 2, 4]  # 2 and 4 tie; 2 was seen first


def test_rrf_weights_and_k() -> None:
    fused = rrf([(1, 0.9)], [(2, 5.0)], k=10, vector_weight=0.5, text_weight=2.0)
    assert [(f.id, round(f.score, 6)) for f in fused] == [(2, round(2 / 11, 6)), (1, round(0.5 / 11, 6))]
    assert rrf([], []) == []
