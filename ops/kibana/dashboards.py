"""The Kibana dashboard as code: saved objects built here, written to ``ops/assets/kibana``.

``python -m ops.kibana.dashboards`` regenerates ``inferq.ndjson`` from the panels of
:mod:`ops.kibana.panels`; a test fails when the file and this code differ, or when a panel uses a
field the index template does not map. Every panel's query is run, as Kibana would send it
(:mod:`ops.kibana.queries` reads it back out of these saved objects), against the local log store
filled by real traffic, and against osmem-server for the aggregations the local ES-API server
lacks (percentiles: those panels are named in ``NOT_LOCAL``); tests/integration/test_dashboards.py
checks each answers with buckets of the expected shape.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from ops.kibana.panels import NOT_LOCAL, PANELS, Panel, panel_fields

__all__ = ["NOT_LOCAL", "PANELS", "Panel", "panel_fields", "render", "saved_objects"]

DATA_VIEW_ID = "inferq-logs"
DATA_VIEW_TITLE = "inferq-logs*"
DASHBOARD_ID = "inferq-overview"
NDJSON = files("ops") / "assets" / "kibana" / "inferq.ndjson"


def _phrase_filter(n: int, key: str, value: str, negate: bool) -> dict[str, Any]:
    """A pinned ``key: value`` filter as Kibana saves it (the query it stands for, and its pill)."""
    return {
        "$state": {"store": "appState"},
        "meta": {
            "alias": None,
            "disabled": False,
            "negate": negate,
            "key": key,
            "type": "phrase",
            "params": {"query": value},
            "indexRefName": f"kibanaSavedObjectMeta.searchSourceJSON.filter[{n}].meta.index",
        },
        "query": {"match_phrase": {key: value}},
    }


def _visualization(panel: Panel) -> dict[str, Any]:
    vis_state = {
        "title": panel.title,
        "type": panel.kind,
        "aggs": panel.aggs,
        "params": {"addLegend": True, "addTooltip": True, **panel.params},
    }
    filters = [_phrase_filter(n, *f) for n, f in enumerate(panel.filters)]
    search = {
        "query": {"language": "kuery", "query": panel.query},
        "filter": filters,
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    index_refs = [
        "kibanaSavedObjectMeta.searchSourceJSON.index",
        *(f["meta"]["indexRefName"] for f in filters),
    ]
    return {
        "id": panel.vid,
        "type": "visualization",
        "attributes": {
            "title": panel.title,
            "visState": json.dumps(vis_state),
            "uiStateJSON": "{}",
            "description": "",
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search)},
        },
        "references": [{"name": name, "type": "index-pattern", "id": DATA_VIEW_ID} for name in index_refs],
    }


def saved_objects() -> list[dict[str, Any]]:
    """Data view, one visualisation per panel, and the dashboard laying them out two per row."""
    objects: list[dict[str, Any]] = [
        {
            "id": DATA_VIEW_ID,
            "type": "index-pattern",
            "attributes": {"title": DATA_VIEW_TITLE, "timeFieldName": "@timestamp"},
            "references": [],
        }
    ]
    panels, refs = [], []
    for n, panel in enumerate(PANELS):
        objects.append(_visualization(panel))
        ref = f"panel_{n}"
        panels.append(
            {
                "panelIndex": str(n),
                "gridData": {"x": 24 * (n % 2), "y": 15 * (n // 2), "w": 24, "h": 15, "i": str(n)},
                "embeddableConfig": {},
                "panelRefName": ref,
                "version": "8.15.0",
            }
        )
        refs.append({"name": ref, "type": "visualization", "id": panel.vid})
    objects.append(
        {
            "id": DASHBOARD_ID,
            "type": "dashboard",
            "attributes": {
                "title": "inferq",
                "description": (
                    "Throughput, latency, batching, errors, dead letters, model versions side by side"
                    " and result deliveries of inferq"
                ),
                "panelsJSON": json.dumps(panels),
                "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
                "timeRestore": True,
                "timeFrom": "now-1h",
                "timeTo": "now",
                "kibanaSavedObjectMeta": {
                    "searchSourceJSON": json.dumps(
                        {"query": {"language": "kuery", "query": ""}, "filter": []}
                    )
                },
            },
            "references": refs,
        }
    )
    return objects


def render() -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in saved_objects())


def main() -> None:
    path = Path(str(NDJSON))
    path.write_text(render())
    print(f"wrote {path} ({len(saved_objects())} saved objects)")


if __name__ == "__main__":
    main()
