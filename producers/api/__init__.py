"""The HTTP result API (FastAPI): routes in :mod:`producers.api.app`, the one error → status map in
:mod:`producers.api.errors`, the body limit in :mod:`producers.api.limits` and long polls in
:mod:`producers.api.waits`. Run it with ``inferq-api`` (or ``python -m producers.api``)."""

from producers.api.app import create_app, main

__all__ = ["create_app", "main"]
