"""KQL to query DSL: the subset dashboards use, as Kibana builds it; anything else refused by name."""

from __future__ import annotations

import pytest

from ops.kibana.kql import MAX_DEPTH, MAX_QUERY_CHARS, KqlError, kql_to_dsl


def one(leaf: dict) -> dict:
    return {"bool": {"should": [leaf], "minimum_should_match": 1}}


def test_a_quoted_value_is_a_phrase_and_clauses_combine_as_kibana_does():
    assert kql_to_dsl('event.dataset : "inferq.request"') == one(
        {"match_phrase": {"event.dataset": "inferq.request"}}
    )
    both = kql_to_dsl('event.dataset : "inferq.request" and event.outcome : "failure"')
    assert both == {
        "bool": {
            "filter": [
                one({"match_phrase": {"event.dataset": "inferq.request"}}),
                one({"match_phrase": {"event.outcome": "failure"}}),
            ]
        }
    }


def test_precedence_is_not_then_and_then_or_and_parentheses_regroup():
    a, b, c = (one({"match": {f: "x"}}) for f in "abc")
    assert kql_to_dsl("a : x or b : x and c : x") == {
        "bool": {"should": [a, {"bool": {"filter": [b, c]}}], "minimum_should_match": 1}
    }
    assert kql_to_dsl("(a : x or b : x) and not c : x") == {
        "bool": {
            "filter": [{"bool": {"should": [a, b], "minimum_should_match": 1}}, {"bool": {"must_not": c}}]
        }
    }
    assert kql_to_dsl("A : x OR B : x")["bool"]["should"][0] == one(
        {"match": {"A": "x"}}
    )  # keywords any case


def test_exists_ranges_escapes_and_the_empty_query():
    assert kql_to_dsl("inferq.model_version : *") == one({"exists": {"field": "inferq.model_version"}})
    assert kql_to_dsl("inferq.batch.size >= 8") == one({"range": {"inferq.batch.size": {"gte": "8"}}})
    assert kql_to_dsl('message : "say \\"hi\\""') == one({"match_phrase": {"message": 'say "hi"'}})
    assert kql_to_dsl("   ") == {"match_all": {}}


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("free text", "free text"),
        ("a : (x or y)", "value lists"),
        ("a : x*", "wildcards"),
        ("a : x)", "unexpected"),
        ("(a : x", "expected close"),
        ('a : "unterminated', "cannot read"),
        ("a :", "needs a value"),
        ("a : x and", "expected word"),
    ],
)
def test_queries_outside_the_subset_are_refused_saying_why(query, says):
    with pytest.raises(KqlError, match=says):
        kql_to_dsl(query)


def test_hostile_sizes_are_bounded():
    with pytest.raises(KqlError, match="at most"):
        kql_to_dsl("a : x and " * (MAX_QUERY_CHARS // 8) + "a : x")
    with pytest.raises(KqlError, match="deeper"):
        kql_to_dsl("not " * (MAX_DEPTH + 2) + "a : x")
    with pytest.raises(KqlError, match="deeper"):
        kql_to_dsl("(" * (MAX_DEPTH + 2) + "a : x" + ")" * (MAX_DEPTH + 2))
