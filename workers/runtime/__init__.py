"""The worker's runtime: one object per worker process that owns its model loops, its Kafka
producer, its identity in Redis and its recovery threads. The Celery adapter
(:mod:`workers.celery_adapter`) only delegates to it."""

from workers.runtime.runtime import Unwritten, WorkerRuntime

__all__ = ["Unwritten", "WorkerRuntime"]
