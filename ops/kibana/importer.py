"""Load the dashboards into a Kibana: the data view, then every saved object, overwriting.

Uses Kibana's own HTTP APIs (``POST /api/data_views/data_view`` and
``POST /api/saved_objects/_import?overwrite=true``), so re-running it updates in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from ops.kibana.dashboards import DATA_VIEW_ID, DATA_VIEW_TITLE, render
from schemas.errors import StackError


@dataclass(frozen=True)
class ImportReport:
    data_view: str
    imported: int
    errors: list[dict]


def import_dashboards(
    kibana_url: str,
    *,
    auth: tuple[str, str] | None = None,
    api_key: str | None = None,
    space: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ImportReport:
    """Create (or replace) the data view and import the saved objects; raises on HTTP errors."""
    base = kibana_url.rstrip("/") + (f"/s/{space}" if space else "")
    headers = {"kbn-xsrf": "inferq"}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    with httpx.Client(base_url=base, headers=headers, auth=auth, timeout=30, transport=transport) as http:
        view = http.post(
            "/api/data_views/data_view",
            json={
                "override": True,
                "data_view": {"id": DATA_VIEW_ID, "title": DATA_VIEW_TITLE, "timeFieldName": "@timestamp"},
            },
        )
        _check(view, "creating the data view")
        imported = http.post(
            "/api/saved_objects/_import",
            params={"overwrite": "true"},
            files={"file": ("inferq.ndjson", render().encode(), "application/ndjson")},
        )
        _check(imported, "importing the saved objects")
        body = imported.json()
    return ImportReport(DATA_VIEW_ID, int(body.get("successCount", 0)), list(body.get("errors", [])))


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise StackError(
            f"Kibana answered {response.status_code} while {what}: {response.text[:300]}",
            hint="check the Kibana URL and credentials (--user with INFERQ_KIBANA_PASSWORD, or an API key)",
        )
