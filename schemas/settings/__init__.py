"""One typed settings object, read from ``INFERQ_*`` environment variables.

Every process (intake, worker, API, producer client, ops CLI) reads this and nothing else from the
environment. Units are in the names: ``_ms``, ``_s``, ``_bytes``. The fields are declared per concern
(:data:`CONCERNS`, one small model each, like arq's settings) and :class:`Settings` is all of them as
one flat object, so every variable is still ``INFERQ_<FIELD>``. Each field's description is the
reference: ``python -m ops.reference`` writes them to ``docs/configuration.md``, grouped by the
``# --- <group>`` comments of each concern, and ``tests/unit/ops/test_reference.py`` fails when the
two drift.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.catalog import CATALOG
from schemas.messages import Task
from schemas.settings.admission import AdmissionSettings
from schemas.settings.cache import CacheSettings
from schemas.settings.delivery import DeliverySettings
from schemas.settings.kafka import KafkaSettings
from schemas.settings.services import ServiceSettings
from schemas.settings.webhooks import WebhookSettings
from schemas.settings.workers import WorkerSettings

ENV_PREFIX = "INFERQ_"

# in reference order (docs/configuration.md)
CONCERNS: tuple[type[BaseModel], ...] = (
    KafkaSettings,
    AdmissionSettings,
    WorkerSettings,
    ServiceSettings,
    WebhookSettings,
    DeliverySettings,
    CacheSettings,
)


class Settings(
    WebhookSettings,
    DeliverySettings,
    ServiceSettings,
    CacheSettings,
    WorkerSettings,
    AdmissionSettings,
    KafkaSettings,
    BaseSettings,
):
    """Configuration for the whole pipeline; each field is ``INFERQ_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    def model_names(self) -> list[str]:
        """The models whose default build this worker serves (and whose default queue it reads), in
        declaration order: the entries of ``INFERQ_WORKER_MODELS`` without an ``@<variant>``."""
        return [m for m in self._worker_entries() if "@" not in m]

    def model_variants(self) -> list[tuple[str, str]]:
        """(model, variant) of the other builds this worker serves (``<model>@<variant>`` entries)."""
        return [(m.partition("@")[0], m.partition("@")[2]) for m in self._worker_entries() if "@" in m]

    def celery_threads(self) -> int:
        """Celery messages (threads) a worker holds: ``worker_concurrency``, raised to
        ``generate_max_running`` for each ``generate`` build it serves (each has its own decoder) + a
        few, since each request being decoded holds its message until its result is written."""
        builds = dict.fromkeys(self._worker_entries())  # each entry is a loop of its own
        decoders = sum(
            CATALOG[m].task is Task.GENERATE for m in (b.partition("@")[0] for b in builds) if m in CATALOG
        )
        if not decoders:
            return self.worker_concurrency
        return max(self.worker_concurrency, self.generate_max_running * decoders + 8)

    def _worker_entries(self) -> list[str]:
        return [m.strip() for m in self.worker_models.split(",") if m.strip()]

    def tenant_quota(self, tenant: str | None) -> tuple[int, int]:
        """(most requests in flight, most result bytes) for ``tenant`` (None = the tenant-less
        bucket ""): its ``tenant_limits`` override, else the defaults; 0 = no limit."""
        name = tenant or ""
        for entry in self.tenant_limits.split(","):
            who, sep, limits = entry.strip().rpartition("=")
            if sep and who.strip() == name:
                inflight, _, size = limits.partition(":")
                return int(inflight or 0), int(size or 0)
        return self.tenant_max_inflight, self.tenant_max_result_bytes


def port_of(url_or_hostport: str) -> int:
    """The TCP port in ``redis://host:6379/0`` or ``host:9092`` (first entry of a list)."""
    first = url_or_hostport.split(",")[0]
    if "://" not in first:
        first = "tcp://" + first
    port = urlsplit(first).port
    if port is None:
        raise ValueError(f"no port in {url_or_hostport!r}: give host:port explicitly")
    return port


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
