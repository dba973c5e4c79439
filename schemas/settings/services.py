"""Settings of the services around the pipeline: the result API, Flower, Elasticsearch, logs and
metrics, and the local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class ServiceSettings(BaseModel):
    """The result API, Flower, Elasticsearch, logs and metrics, the local stack."""

    # --- HTTP result API / Flower / Elasticsearch ---------------------------------------------
    api_host: str = Field("127.0.0.1", description="Result API bind address")
    api_keys: SecretStr = Field(
        SecretStr(""),
        description=(
            "Comma-separated `tenant:sha256(key)` pairs (make one with `inferq-ops api-key --tenant "
            "NAME`); empty = the API is open (local use only)"
        ),
    )
    api_max_body_bytes: int = Field(
        1_048_576, ge=1_024, description="Larger HTTP bodies get 413 `payload_too_large`"
    )
    api_cors_origins: str = Field("", description="Comma-separated origins CORS allows; empty = CORS off")
    api_port: int = Field(18080, description="Result API port")
    api_max_waits_per_tenant: int = Field(
        64,
        ge=1,
        description=(
            "Open long polls (`GET /v1/results/{id}?wait_ms=`) one tenant may hold; more get 429 "
            "`quota_exceeded`"
        ),
    )
    api_max_waits: int = Field(
        2_000, ge=1, description="Open long polls one API process holds in all; more get 429 `quota_exceeded`"
    )
    flower_port: int = Field(15555, description="Flower port")
    flower_user: str = Field("admin", description="Flower basic-auth user")
    flower_password: SecretStr = Field(
        SecretStr(""),
        description=(
            "Flower basic-auth password; empty: `inferq-ops up` generates one per state folder in "
            "`<state_dir>/flower.password` (mode 0600, shown by `inferq-ops status`); compose and "
            "Kubernetes require it"
        ),
    )
    elasticsearch_url: str = Field(
        "http://127.0.0.1:19200",
        description=(
            "Elasticsearch API endpoint (the local stack serves one); `https://` verifies the certificate"
        ),
    )
    elasticsearch_api_key: SecretStr = Field(
        SecretStr(""), description="API key (base64 `id:key`) the log shipper sends; a secret, never logged"
    )
    elasticsearch_ca_certs: str = Field("", description="CA bundle for an `https://` Elasticsearch")

    # --- OpenTelemetry span export (optional extra `inferq[otel]`; workers/telemetry/otel.py) -----
    otel_enabled: bool = Field(
        False,
        description="Export OpenTelemetry spans (publish, intake, queue wait, batch, result write); needs "
        "`pip install inferq[otel]`. The exporter reads the standard `OTEL_EXPORTER_OTLP_*`, "
        "`OTEL_SERVICE_NAME` and `OTEL_BSP_*` variables",
    )
    otel_exporter: Literal["otlp", "console"] = Field(
        "otlp",
        description="Where spans go: `otlp` (HTTP/protobuf, `OTEL_EXPORTER_OTLP_ENDPOINT`) or `console`",
    )

    # --- Logs (ECS JSON to stderr, shipped to Elasticsearch) and metrics -------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Level of every process's log"
    )
    log_ship: bool = Field(True, description="Ship log records to Elasticsearch")
    log_queue_max_records: int = Field(
        20_000, ge=100, description="Records waiting to ship; beyond this they are dropped and counted"
    )
    log_bulk_max_records: int = Field(500, ge=1, description="Records per bulk request")
    log_flush_interval_ms: int = Field(
        1_000, ge=10, description="Longest a record waits before it is shipped"
    )
    log_retry_max_s: float = Field(30.0, gt=0, description="Cap of the backoff while Elasticsearch is down")
    log_spool_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1_024, description="Disk spool per process while Elasticsearch is down"
    )
    log_inputs: bool = Field(False, description="Add a masked preview of each input to the intake's log")
    metrics_port: int = Field(19108, description="Port of `inferq-exporter` (bound to `INFERQ_API_HOST`)")
    prometheus_port: int = Field(19090, description="Prometheus, when the local stack starts it")
    intake_stalled_after_s: float = Field(
        60.0,
        gt=0,
        description=(
            "An intake that has not polled Kafka for this long is down: `inferq_intake_up{replica}` 0 "
            "(alerts `InferqIntakeDown`, `InferqIntakeStalled`), `inferq-ops status` not ready"
        ),
    )
    kibana_password: SecretStr = Field(
        SecretStr(""),
        description=(
            "Password for `inferq-ops kibana --user` (or `--password-stdin`); never on the command "
            "line, where `ps` shows it"
        ),
    )
    kibana_api_key: SecretStr = Field(
        SecretStr(""), description="API key for `inferq-ops kibana` (or `--api-key-stdin`)"
    )
    metrics_read_live: bool = Field(
        True,
        description=(
            "The exporter also reads Kafka lag, queue depth, in flight and workers up; `false` for "
            "per-pod sidecars (one live reader per cluster)"
        ),
    )

    # --- Local stack -------------------------------------------------------------------------
    state_dir: Path = Field(Path(".inferq"), description="Where `inferq-ops` keeps data, pids and logs")
