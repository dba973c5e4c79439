"""What a PromQL expression reads: metric names and label names, and what a ``/metrics`` page serves.

Enough of PromQL to check a dashboard against a live exporter without a Prometheus parser: string
literals, range and offset durations, label matchers and grouping clauses are read and taken out;
every identifier left that is not a function call or an operator keyword is a metric name. Label
names come from matchers (``{status!="done"}``), grouping and matching clauses (``by (model)``,
``on (gpu)``) and a panel's legend template (``{{version}}``). Syntax is not checked here: the
local stack's Prometheus parses every expression in the dashboard test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_NAME = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}")
_IDENT = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?")
_NUMBER_OR_DURATION = re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?\b")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless", "atan2", "inf", "nan"}


@dataclass(frozen=True)
class Refs:
    """The metric names and label names one expression (and its legend) reads."""

    metrics: frozenset[str]
    labels: frozenset[str]


def references(expr: str, legend: str = "") -> Refs:
    """Metric and label names in ``expr``; label names also from the legend template ``legend``."""
    text = _STRING.sub('""', expr)
    text = _RANGE.sub(" ", text)
    labels = set(_LEGEND.findall(legend))
    for body in _MATCHERS.findall(text):
        labels |= set(_MATCHER_NAME.findall(body))
    text = _MATCHERS.sub(" ", text)
    for body in _CLAUSE.findall(text):
        labels |= {name.strip() for name in body.split(",") if name.strip()}
    text = _CLAUSE.sub(" ", text)
    text = _NUMBER_OR_DURATION.sub(" ", text)
    metrics = {
        m.group(1) for m in _IDENT.finditer(text) if not m.group(2) and m.group(1).lower() not in KEYWORDS
    }
    return Refs(frozenset(metrics), frozenset(labels))


def served(text: str) -> dict[str, set[str]]:
    """Each sample name a ``/metrics`` page serves (``x_total``, ``x_bucket``, ...) and its label names."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out
