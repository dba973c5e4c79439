"""``python -m ops.kibana.check``: run every panel of the shipped dashboard against a log store.

Before importing the dashboard into a Kibana (or after changing a panel), point this at the
Elasticsearch the services ship to (``INFERQ_ELASTICSEARCH_URL``, with ``INFERQ_ELASTICSEARCH_API_KEY``
and ``INFERQ_ELASTICSEARCH_CA_CERTS`` when set): each panel's search, exactly as Kibana would send it
over the dashboard's time range, is run and its answer checked for what the panel draws. A panel
with no data in that window (no deliveries yet, say) is reported, not hidden; the exit status is 1
when any panel was refused or came back empty.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from ops.kibana.dashboards import saved_objects
from ops.kibana.queries import PanelSearch, answer_problems, dashboard_searches
from schemas.connections import elasticsearch_client
from schemas.settings import get_settings


@dataclass(frozen=True)
class PanelReport:
    """One panel's outcome: ``refused`` (the server's reason) or ``problems`` (empty: it draws)."""

    vid: str
    title: str
    refused: str | None
    problems: tuple[str, ...]
    documents: int

    @property
    def ok(self) -> bool:
        return self.refused is None and not self.problems


def check_panels(es: Elasticsearch, searches: list[PanelSearch]) -> list[PanelReport]:
    """Each search run on ``es``; a refusal (an aggregation the server lacks, say) is reported."""
    out = []
    for s in searches:
        try:
            answer: dict[str, Any] = es.search(index=s.index, **s.body).body
        except ApiError as e:
            out.append(PanelReport(s.vid, s.title, f"{e.meta.status} {_reason(e)}", (), 0))
            continue
        hits = int(answer.get("hits", {}).get("total", {}).get("value", 0))
        out.append(PanelReport(s.vid, s.title, None, tuple(answer_problems(s, answer)), hits))
    return out


def _reason(e: ApiError) -> str:
    """The server's own words (``Unknown aggregation type [percentiles]``), else the error type."""
    body = e.body if isinstance(e.body, dict) else {}
    error = body.get("error")
    return str(error.get("reason") or e.message) if isinstance(error, dict) else str(e.message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.kibana.check", description=__doc__)
    parser.add_argument("--url", help="Elasticsearch URL (default: INFERQ_ELASTICSEARCH_URL)")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.url:
        settings = settings.model_copy(update={"elasticsearch_url": args.url})
    with elasticsearch_client(settings, request_timeout=30) as es:
        reports = check_panels(es, dashboard_searches(saved_objects()))
    for r in reports:
        verdict = "ok" if r.ok else "REFUSED" if r.refused else "EMPTY"
        print(f"{verdict:8s} {r.vid:32s} {r.documents:7d} docs  {r.title}")
        for why in (r.refused,) if r.refused else r.problems:
            print(f"{'':8s}   {why}")
    bad = [r for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)} of {len(reports)} panels answer with data")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
