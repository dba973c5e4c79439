"""The Celery adapter: ``celery -A workers.celery_adapter worker`` loads the app with its task."""

from workers.celery_adapter.tasks import app

__all__ = ["app"]
