"""Producer side: the Python client, the ``inferq-submit`` CLI and the HTTP result API."""

from producers.client import InferqClient

__all__ = ["InferqClient"]
