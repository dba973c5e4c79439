"""The searches a Kibana dashboard sends, read back out of its saved objects, and a check of the answers.

No Kibana runs in the tests, so this does what Kibana does when it draws a panel of an
aggregation-based visualisation: take the dashboard's panels, each visualisation's data view (its
index pattern and time field), its KQL query and pinned filters (``searchSourceJSON``) and its
aggregations (``visState``), and turn them into one ``_search`` body, with the dashboard's time
range as a filter. :func:`answer_problems` then says what in an answer would leave the panel empty
or broken: no buckets, a metric with no value, a bucket with no key.

Only what the shipped dashboard uses is translated; anything else raises :class:`UnsupportedPanel`
naming the panel and the construct, so a new panel that this code cannot run fails loudly rather
than going unchecked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ops.kibana.kql import kql_to_dsl

# Kibana's "auto" date interval aims at about this many buckets over the time range
BAR_TARGET = 50
NICE_INTERVALS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 86400, 7 * 86400)
METRICS = {"count", "avg", "sum", "min", "max", "cardinality", "percentiles"}
BUCKETS = {"date_histogram", "histogram", "terms"}


class UnsupportedPanel(ValueError):
    """A saved object uses something this translation does not know; extend it, or the panel."""


@dataclass(frozen=True)
class PanelSearch:
    """One panel's search: where (``index``, a data view's pattern) and what (``body``)."""

    vid: str
    title: str
    index: str
    body: dict[str, Any]
    metrics: tuple[dict[str, Any], ...]  # visState metric aggs, in order
    buckets: tuple[dict[str, Any], ...]  # visState bucket aggs, outermost first


def dashboard_searches(objects: list[dict[str, Any]], now: datetime | None = None) -> list[PanelSearch]:
    """Every panel of every dashboard in ``objects``, over the dashboard's saved time range."""
    by_ref = {(o["type"], o["id"]): o for o in objects}
    out = []
    for board in (o for o in objects if o["type"] == "dashboard"):
        attrs = board["attributes"]
        span = time_range(attrs.get("timeFrom", "now-15m"), attrs.get("timeTo", "now"), now)
        refs = {r["name"]: (r["type"], r["id"]) for r in board["references"]}
        for panel in json.loads(attrs["panelsJSON"]):
            vis = by_ref.get(refs[panel["panelRefName"]])
            if vis is None:
                raise UnsupportedPanel(f"dashboard {board['id']} names a missing {panel['panelRefName']}")
            out.append(panel_search(vis, by_ref, span))
    return out


def panel_search(
    vis: dict[str, Any], by_ref: dict[tuple[str, str], dict[str, Any]], span: tuple[datetime, datetime]
) -> PanelSearch:
    """The ``_search`` Kibana sends for one visualisation over ``span``."""
    attrs = vis["attributes"]
    state = json.loads(attrs["visState"])
    source = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
    refs = {r["name"]: (r["type"], r["id"]) for r in vis["references"]}
    view = by_ref[refs[source["indexRefName"]]]["attributes"]
    query = source.get("query", {"language": "kuery", "query": ""})
    if query.get("language") != "kuery":
        raise UnsupportedPanel(f"{vis['id']}: query language {query.get('language')!r} (only kuery)")
    keep: list[dict[str, Any]] = []  # documents must match all of these (Kibana's bool.filter)
    drop: list[dict[str, Any]] = []  # and none of these (negated filters)
    if query["query"].strip():
        keep.append(kql_to_dsl(query["query"]))
    for f in source.get("filter", []):
        meta = f.get("meta", {})
        if meta.get("disabled"):
            continue
        (drop if meta.get("negate") else keep).append(f["query"])
    start, end = span
    time_field = view.get("timeFieldName")
    if time_field:
        window = {"gte": _iso(start), "lte": _iso(end), "format": "strict_date_optional_time"}
        keep.append({"range": {time_field: window}})
    aggs = [a for a in state["aggs"] if a.get("enabled", True)]
    for a in aggs:
        if a["type"] not in METRICS | BUCKETS:
            raise UnsupportedPanel(f"{vis['id']}: aggregation {a['type']!r} is not translated")
    metrics = tuple(a for a in aggs if a["schema"] == "metric")
    # Kibana nests split charts outside everything else, then the other buckets in their order
    buckets = tuple(
        sorted((a for a in aggs if a["schema"] != "metric"), key=lambda a: a["schema"] != "split")
    )
    body: dict[str, Any] = {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"must": [], "filter": keep, "should": [], "must_not": drop}},
    }
    tree = aggs_dsl(metrics, buckets, interval_s=auto_interval_s(end - start))
    if tree:
        body["aggs"] = tree
    return PanelSearch(vis["id"], attrs["title"], view["title"], body, metrics, buckets)


def aggs_dsl(
    metrics: tuple[dict[str, Any], ...], buckets: tuple[dict[str, Any], ...], interval_s: int
) -> dict[str, Any]:
    """Buckets nested in order with the metrics inside the innermost (``count`` is ``doc_count``);
    a terms bucket ordered by a metric gets that metric as its own child too, as Kibana does, since
    Elasticsearch orders only by a direct sub-aggregation."""
    by_id = {a["id"]: a for a in metrics}
    tree: dict[str, Any] = {a["id"]: _metric_dsl(a) for a in metrics if a["type"] != "count"}
    for a in reversed(buckets):
        inner = _bucket_dsl(a, metrics, interval_s)
        node: dict[str, Any] = {a["type"]: inner}
        order_by = next(iter(inner.get("order", {})), "")
        if order_by in by_id and order_by not in tree:
            tree = {**tree, order_by: _metric_dsl(by_id[order_by])}
        if tree:
            node["aggs"] = tree
        tree = {a["id"]: node}
    return tree


def _metric_dsl(a: dict[str, Any]) -> dict[str, Any]:
    p = a["params"]
    body: dict[str, Any] = {"field": p["field"]}
    if a["type"] == "percentiles":
        body["percents"] = p["percents"]
    return {a["type"]: body}


def _bucket_dsl(a: dict[str, Any], metrics: tuple[dict[str, Any], ...], interval_s: int) -> dict[str, Any]:
    p = a["params"]
    if a["type"] == "date_histogram":
        if p.get("interval", "auto") != "auto":
            raise UnsupportedPanel(f"date_histogram interval {p['interval']!r} (only auto)")
        return {
            "field": p["field"],
            "fixed_interval": _interval_text(interval_s),
            "time_zone": "UTC",
            "min_doc_count": int(p.get("min_doc_count", 1)),
        }
    if a["type"] == "histogram":
        # Kibana's histogram "show empty buckets" switch: on asks for every bucket, off for filled ones
        return {
            "field": p["field"],
            "interval": p["interval"],
            "min_doc_count": 0 if p["min_doc_count"] else 1,
        }
    order_by = p.get("orderBy", "_key")
    by_metric = {m["id"]: m for m in metrics}
    if order_by in by_metric:
        key = "_count" if by_metric[order_by]["type"] == "count" else order_by
    elif order_by in ("_key", "alphabetical"):
        key = "_key"
    else:
        raise UnsupportedPanel(f"terms ordered by {order_by!r}")
    if key not in ("_count", "_key") and by_metric[order_by]["type"] == "percentiles":
        raise UnsupportedPanel("terms ordered by a percentiles metric needs a percent to order by")
    return {"field": p["field"], "size": p["size"], "order": {key: p.get("order", "desc")}}


def time_range(start: str, end: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """A dashboard's ``timeFrom``/``timeTo`` (``now``, ``now-1h``, ``now-15m``, ``now-7d`` or ISO)."""
    at = now or datetime.now(timezone.utc)
    return _when(start, at), _when(end, at)


def _when(text: str, now: datetime) -> datetime:
    m = re.fullmatch(r"now(?:-(\d+)([smhd]))?", text)
    if m is None:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    if m.group(1) is None:
        return now
    seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return now - timedelta(seconds=seconds)


def auto_interval_s(span: timedelta) -> int:
    """The nice interval nearest to ``span / BAR_TARGET`` (Kibana's "auto"; 1 h gives 1 minute)."""
    want = max(1.0, span.total_seconds() / BAR_TARGET)
    return min(NICE_INTERVALS_S, key=lambda s: abs(_log_ratio(s, want)))


def _log_ratio(a: float, b: float) -> float:
    return max(a, b) / min(a, b)


def _interval_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def answer_problems(search: PanelSearch, answer: dict[str, Any]) -> list[str]:
    """What would leave the panel empty or broken; an empty list when every part of it has data.

    Every bucket level must have buckets, each with a key (a terms bucket: a non-empty one) and
    documents; every metric must be present in each innermost bucket and hold a value in at least
    one (a percentiles metric: a value for each of its percents).
    """
    if answer.get("hits", {}).get("total", {}).get("value", 0) == 0:
        return ["no documents match the panel's query and filters"]
    problems: list[str] = []
    leaves = _leaves(search.buckets, answer.get("aggregations", {}), problems, path="")
    if not leaves:
        return problems  # no bucket to hold a metric: the bucket problem says it
    for m in search.metrics:
        if m["type"] == "count":
            continue
        values: list[dict[str, Any]] = [leaf[m["id"]] for leaf in leaves if m["id"] in leaf]
        if len(values) < len(leaves):
            problems.append(f"metric {m['id']} ({m['type']}) missing from a bucket")
        elif not any(_has_value(m, v) for v in values):
            problems.append(f"metric {m['id']} ({m['type']} of {m['params']['field']}) has no value anywhere")
    return problems


def _leaves(
    buckets: tuple[dict[str, Any], ...], node: dict[str, Any], problems: list[str], path: str
) -> list[dict[str, Any]]:
    if not buckets:
        return [node]
    agg, rest = buckets[0], buckets[1:]
    here = f"{path}{agg['type']} {agg['id']} ({agg['params']['field']})"
    found = node.get(agg["id"], {}).get("buckets")
    if not found:
        problems.append(f"{here}: no buckets")
        return []
    leaves = []
    for b in found:
        key = b.get("key")
        if key is None or (agg["type"] == "terms" and key == "") or b.get("doc_count", 0) <= 0:
            problems.append(f"{here}: a bucket without a key or documents: {b}")
            continue
        leaves += _leaves(rest, b, problems, f"{here}={key} > ")
    return leaves


def _has_value(metric: dict[str, Any], answer: dict[str, Any]) -> bool:
    if metric["type"] == "percentiles":
        values = answer.get("values", {})
        return len(values) == len(metric["params"]["percents"]) and all(
            v is not None for v in values.values()
        )
    return answer.get("value") is not None


def bucket_keys(search: PanelSearch, answer: dict[str, Any], agg_id: str) -> set[Any]:
    """Every key the bucket aggregation ``agg_id`` answered, at any depth."""
    depth = [a["id"] for a in search.buckets].index(agg_id)
    nodes = [answer.get("aggregations", {})]
    for a in search.buckets[:depth]:
        nodes = [b for n in nodes for b in n.get(a["id"], {}).get("buckets", [])]
    return {b["key"] for n in nodes for b in n.get(agg_id, {}).get("buckets", [])}
