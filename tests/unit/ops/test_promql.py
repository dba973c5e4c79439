"""Metric and label names out of PromQL and out of a /metrics page."""

from __future__ import annotations

from ops.metrics.promql import references, served


def test_metrics_and_labels_of_an_expression_and_its_legend():
    refs = references(
        'sum by (model, version) (rate(inferq_results_total{status!="done", model=~"a.*"}[5m]))'
        " / sum by (model, version) (rate(inferq_results_total[5m] offset 1h)) > 0.05",
        "{{model}} {{ version }}",
    )
    assert refs.metrics == {"inferq_results_total"}
    assert refs.labels == {"model", "version", "status"}


def test_functions_keywords_strings_and_durations_are_not_metrics():
    refs = references(
        'histogram_quantile(0.99, sum without (pod) (rate(x_bucket{job="inferq_fake"}[1m30s])))'
        " and on (gpu) group_left (name) y unless z or vector(1e3)"
    )
    assert refs.metrics == {"x_bucket", "y", "z"}
    assert refs.labels == {"pod", "job", "gpu", "name"}


def test_served_reads_each_sample_name_with_its_label_names():
    text = (
        "# HELP inferq_results_total Results\n# TYPE inferq_results_total counter\n"
        'inferq_results_total{model="m",status="done"} 3.0\n'
        "# HELP inferq_in_flight In flight\n# TYPE inferq_in_flight gauge\ninferq_in_flight 0.0\n"
        "# HELP h Hist\n# TYPE h histogram\n"
        'h_bucket{model="m",le="1.0"} 1.0\nh_bucket{model="m",le="+Inf"} 1.0\n'
        'h_sum{model="m"} 0.5\nh_count{model="m"} 1.0\n'
    )
    assert served(text) == {
        "inferq_results_total": {"model", "status"},
        "inferq_in_flight": set(),
        "h_bucket": {"model", "le"},
        "h_sum": {"model"},
        "h_count": {"model"},
    }
