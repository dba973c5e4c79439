"""The searches Kibana sends for the shipped dashboard, read out of its saved objects, and the check
that an answer fills a panel (the integration test runs them: tests/integration/test_dashboards.py)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest

from ops.kibana import dashboards
from ops.kibana.queries import (
    UnsupportedPanel,
    aggs_dsl,
    answer_problems,
    auto_interval_s,
    bucket_keys,
    dashboard_searches,
)

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)


def searches(objects=None):
    return {s.vid: s for s in dashboard_searches(objects or dashboards.saved_objects(), now=NOW)}


def test_one_search_per_panel_on_the_data_view_over_the_dashboards_hour():
    found = searches()
    assert list(found) == [p.vid for p in dashboards.PANELS]
    for s in found.values():
        assert s.index == dashboards.DATA_VIEW_TITLE and s.body["size"] == 0
        window = s.body["query"]["bool"]["filter"][-1]["range"]["@timestamp"]
        assert (window["gte"], window["lte"]) == ("2026-12-02T08:00:00.000Z", "2026-12-02T09:00:00.000Z")


def test_query_and_pinned_filters_become_the_bool_filter():
    s = searches()["inferq-delivery-failures"]
    kql, pinned, _ = s.body["query"]["bool"]["filter"]
    assert kql == {
        "bool": {
            "should": [{"match_phrase": {"event.dataset": "inferq.delivery"}}],
            "minimum_should_match": 1,
        }
    }
    assert pinned == {"match_phrase": {"inferq.delivery.outcome": "failed"}}


def test_negated_filters_exclude_and_disabled_ones_do_nothing():
    objects = copy.deepcopy(dashboards.saved_objects())
    vis = next(o for o in objects if o["id"] == "inferq-delivery-failures")
    source = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    negated, disabled = copy.deepcopy(source["filter"][0]), copy.deepcopy(source["filter"][0])
    negated["meta"]["negate"] = True
    disabled["meta"]["disabled"] = True
    source["filter"] = [negated, disabled]
    vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"] = json.dumps(source)
    body = searches(objects)["inferq-delivery-failures"].body["query"]["bool"]
    assert body["must_not"] == [{"match_phrase": {"inferq.delivery.outcome": "failed"}}]
    assert len(body["filter"]) == 2  # the query and the time range


def test_buckets_nest_split_first_with_metrics_innermost_and_terms_ordered_like_kibana():
    compute = searches()["inferq-batch-compute"].body["aggs"]
    ((_, time_node),) = compute.items()
    assert time_node["date_histogram"]["fixed_interval"] == "1m"  # auto over an hour
    ((_, terms_node),) = time_node["aggs"].items()
    assert terms_node["terms"] == {"field": "inferq.model", "size": 10, "order": {"1": "desc"}}
    assert set(terms_node["aggs"]) == {"1", "2"}
    deliveries = searches()["inferq-deliveries"].body["aggs"]
    assert deliveries["2"]["terms"]["field"] == "inferq.delivery.sink"  # the split chart, outermost
    assert deliveries["2"]["terms"]["order"] == {"_count": "desc"}  # ordered by the count metric
    assert list(deliveries["2"]["aggs"]["3"]["aggs"]) == ["4"]
    histogram = searches()["inferq-latency-distribution"].body["aggs"]["2"]["histogram"]
    assert histogram["min_doc_count"] == 1  # "show empty buckets" is off


def test_terms_ordered_by_a_metric_nested_deeper_get_that_metric_as_a_child():
    metric = {"id": "1", "type": "avg", "schema": "metric", "params": {"field": "x"}}
    outer = {
        "id": "2",
        "type": "terms",
        "schema": "bucket",
        "params": {"field": "m", "size": 5, "orderBy": "1"},
    }
    inner = {
        "id": "3",
        "type": "terms",
        "schema": "bucket",
        "params": {"field": "s", "size": 5, "orderBy": "1"},
    }
    tree = aggs_dsl((metric,), (outer, inner), interval_s=60)
    assert tree["2"]["terms"]["order"] == {"1": "desc"}
    assert set(tree["2"]["aggs"]) == {"1", "3"} and tree["2"]["aggs"]["1"] == {"avg": {"field": "x"}}
    assert tree["2"]["aggs"]["3"]["aggs"] == {"1": {"avg": {"field": "x"}}}


def test_auto_interval_aims_at_about_fifty_buckets():
    assert auto_interval_s(timedelta(hours=1)) == 60
    assert auto_interval_s(timedelta(minutes=15)) == 30
    assert auto_interval_s(timedelta(days=1)) == 1800
    assert auto_interval_s(timedelta(seconds=5)) == 1


def test_an_aggregation_it_cannot_translate_names_the_panel():
    objects = copy.deepcopy(dashboards.saved_objects())
    vis = next(o for o in objects if o["id"] == "inferq-throughput")
    state = json.loads(vis["attributes"]["visState"])
    state["aggs"][0]["type"] = "top_hits"
    vis["attributes"]["visState"] = json.dumps(state)
    with pytest.raises(UnsupportedPanel, match=r"inferq-throughput.*top_hits"):
        searches(objects)


def test_a_full_answer_has_no_problems_and_its_keys_are_read_at_any_depth():
    s = searches()["inferq-per-model"]
    answer = {
        "hits": {"total": {"value": 3}},
        "aggregations": {
            "4": {
                "buckets": [
                    {
                        "key": "m",
                        "doc_count": 3,
                        "5": {
                            "buckets": [
                                {"key": "done", "doc_count": 2, "2": {"value": 5.0}, "3": {"value": 7.0}},
                                {"key": "failed", "doc_count": 1, "2": {"value": None}, "3": {"value": None}},
                            ]
                        },
                    }
                ]
            }
        },
    }
    assert answer_problems(s, answer) == []
    assert bucket_keys(s, answer, "4") == {"m"} and bucket_keys(s, answer, "5") == {"done", "failed"}


def test_an_answer_that_would_leave_the_panel_empty_says_what_is_missing():
    s = searches()["inferq-batch-size"]
    assert answer_problems(s, {"hits": {"total": {"value": 0}}}) == [
        "no documents match the panel's query and filters"
    ]
    empty = {"hits": {"total": {"value": 4}}, "aggregations": {"3": {"buckets": []}}}
    assert answer_problems(s, empty) == ["date_histogram 3 (@timestamp): no buckets"]
    no_value = {
        "hits": {"total": {"value": 4}},
        "aggregations": {
            "3": {"buckets": [{"key": 1, "doc_count": 4, "1": {"value": None}, "2": {"value": 3}}]}
        },
    }
    assert answer_problems(s, no_value) == ["metric 1 (avg of inferq.batch.size) has no value anywhere"]
    p = searches()["inferq-latency-percentiles"]
    partial = {
        "hits": {"total": {"value": 4}},
        "aggregations": {"2": {"buckets": [{"key": 1, "doc_count": 4, "1": {"values": {"50.0": 3.0}}}]}},
    }
    assert answer_problems(p, partial) == [
        "metric 1 (percentiles of inferq.duration_ms.total) has no value anywhere"
    ]
    keyless = searches()["inferq-dead-letters"]
    blank = {
        "hits": {"total": {"value": 1}},
        "aggregations": {"2": {"buckets": [{"key": "", "doc_count": 1}]}},
    }
    assert "without a key" in answer_problems(keyless, blank)[0]
