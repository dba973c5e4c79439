"""Delivery of terminal results beyond Redis: reply topics (Kafka) and webhooks (HTTPS POST).

The Redis result is the record; a delivery is a copy sent after it is written, retried with backoff
and never holding the result back. Sinks implement :class:`workers.delivery.sink.Sink`.
"""
