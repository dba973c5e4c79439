"""One typed settings object, read from ``INFERQ_*`` environment variables.

Every process (intake, worker, API, producer client, ops CLI) reads this and nothing else from the
environment. Units are in the names: ``_ms``, ``_s``, ``_bytes``. The README lists every variable;
``tests/unit/test_settings.py`` fails when the two drift.
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
    kafka_bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap host:port list")
    topic_prefix: str = Field(
        "inferq", description="Prefix of every topic: <prefix>.requests, <prefix>.deadletter"
    )
    kafka_partitions: int = Field(4, ge=1, description="Partitions of the requests topic when ops creates it")
    kafka_group_id: str = Field("inferq-intake", description="Consumer group of the intake")
    kafka_group_instance_id: str = Field(
        "",
        description="Static group membership (KIP-345): a stable id per intake replica, so a replica "
        "that restarts takes its partitions back at once; empty = dynamic membership",
    )
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(1_000, ge=100)
    kafka_max_poll_records: int = Field(500, ge=1)
    kafka_poll_timeout_ms: int = Field(
        50, ge=1, description="Longest the broker holds an empty fetch (fetch.max.wait.ms)"
    )
    kafka_poll_wait_ms: int = Field(
        2, ge=0, description="Once assigned, how long one poll waits for the broker's answer"
    )
    intake_cpu_policy: Literal["normal", "idle"] = Field(
        "normal", description="idle = the intake runs only on otherwise idle CPU (Linux SCHED_IDLE)"
    )
    kafka_idle_poll_max_ms: float = Field(
        5.0,
        gt=0,
        description="Doorbell off: after empty polls the intake pauses, doubling from 1 ms up to this",
    )
    intake_doorbell: bool = Field(
        True,
        description="Idle intakes wait on a Redis doorbell rung by InferqClient once the broker has a "
        "record, so they poll only every kafka_quiet_poll_ms (other producers' records wait up to that)",
    )
    kafka_quiet_after_ms: float = Field(1_000.0, ge=0, description="No records for this long = quiet")
    kafka_quiet_poll_ms: float = Field(50.0, gt=0, description="Pause between polls while quiet")
    kafka_trim_committed_every_s: float = Field(
        0.0,
        ge=0,
        description="Delete the requests topic's records the intake has committed, this often (0 = never: "
        "Kafka's retention decides). `inferq-ops up` sets 2 for its broker, which rewrites its whole "
        "data file as the log changes, at a CPU cost that grows with the log",
    )
    kafka_max_message_bytes: int = Field(
        1_048_576, ge=1_024, description="Messages larger than this are dead-lettered"
    )
    kafka_max_request_bytes: int = Field(
        1_048_576,
        ge=65_536,
        description="The intake's and workers' producers' max_request_size (the most one record they "
        "send may take, dead letters included); keep it above deadletter_max_bytes",
    )
    deadletter_max_bytes: int = Field(
        65_536,
        ge=4_096,
        description="The most one dead letter's JSON takes: the embedded payload is cut to fit (its size "
        "and sha256 are kept); must stay below kafka_max_request_bytes minus 16 KiB for the record's "
        "key and framing",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client connects (TLS with SSL/SASL_SSL)"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism, with SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_username: str = Field("", description="SASL user")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (never logged)")
    kafka_ssl_cafile: str = Field("", description="CA bundle that signed the brokers' certificates")
    kafka_ssl_certfile: str = Field("", description="Client certificate, for brokers that require mutual TLS")
    kafka_ssl_keyfile: str = Field("", description="Client certificate's private key")
    kafka_truncation_check_s: float = Field(
        2.0,
        ge=0,
        description="How often the intake reads back the records it handled, to notice a log a broker cut "
        "back below its position (0 = never: brokers with replication and acks=all do not lose acknowledged "
        "records)",
    )
    kafka_tenant_auth: Literal["trust", "signed"] = Field(
        "trust",
        description="What ties a Kafka request to its tenant: trust = the deployment trusts its producers "
        "(the body's tenant is taken as is); signed = records carry inferq-tenant and inferq-signature "
        "(HMAC-SHA256 of the value with the tenant's key), others are dead-lettered unauthorized/forbidden",
    )
    kafka_tenant_keys: SecretStr = Field(
        SecretStr(""),
        description="Tenant signing keys for kafka_tenant_auth=signed: `tenant:hexkey,...` (≥ 16 bytes each; "
        "never logged)",
    )
    backpressure_max_inflight: int = Field(
        1_000,
        ge=1,
        description="Requests of one model admitted and unfinished above which the intake pauses the "
        "partitions whose next record is for that model (the backlog stays in Kafka)",
    )
    backpressure_resume_ratio: float = Field(
        0.8, gt=0, le=1, description="Paused partitions resume below this share of the bound"
    )
    unserved_model_grace_s: float = Field(
        60.0,
        ge=0,
        description="A catalogue model no live worker advertises is still admitted this long after the "
        "intake starts or the model's last worker was seen (workers starting up); after it, its requests "
        "fail model_unavailable",
    )
    tenant_max_inflight: int = Field(
        0,
        ge=0,
        description="Requests of one tenant admitted and unfinished; more fail quota_exceeded (0 = off)",
    )
    tenant_max_result_bytes: int = Field(
        0,
        ge=0,
        description="Bytes of unexpired results one tenant may hold in Redis; past it, new requests fail "
        "quota_exceeded until results expire (0 = off)",
    )
    tenant_limits: str = Field(
        "",
        pattern=r"^( *[^=, ]* *= *\d*(:\d*)? *)?(, *[^=, ]* *= *\d*(:\d*)? *)*$",
        description="Per-tenant overrides: tenant=inflight:bytes,... (empty tenant name = requests "
        "without a tenant; 0 = off)",
    )

    # --- Redis / Celery ----------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:16379/0", description="Result store")
    celery_broker_url: str = Field("redis://127.0.0.1:16379/1", description="Celery broker (Redis)")
    celery_visibility_timeout_s: int = Field(
        900,
        ge=30,
        description="Unacked Celery messages are redelivered after this; keep above the longest task",
    )
    celery_sent_events: bool = Field(
        False,
        description="The intake sends Celery's task-sent event for each message (Flower then lists tasks "
        "from the moment they are queued, not from their arrival at a worker); costs ~0.8 ms a message",
    )
    celery_remote_control: bool = Field(
        False,
        description="Workers obey Celery broadcast commands (shutdown, pool restart, rate limits), from "
        "Flower or any client of the broker; off, Flower shows tasks from events but cannot stop a worker",
    )
    redis_ssl_ca_certs: str = Field(
        "", description="CA bundle for rediss:// URLs (TLS); ACL users go in the URL: rediss://user:pw@host"
    )
    redis_retry_max_s: float = Field(
        30.0,
        gt=0,
        description="Transient Redis errors (a restart, a blip) are retried with backoff this long",
    )
    key_prefix: str = Field("inferq", description="Prefix of every Redis key")
    result_ttl_s: int = Field(86_400, ge=1, description="How long results stay readable in Redis")

    # --- Batching ----------------------------------------------------------------------------
    max_batch_size: int = Field(
        32, ge=1, description="Flush when this many texts are waiting (texts, not requests, are batched)"
    )
    max_batch_tokens: int = Field(
        8_192, ge=1, description="Flush when the padded batch (texts × longest) would pass this many tokens"
    )
    max_wait_ms: float = Field(
        10.0,
        ge=0,
        description="Flush when the oldest waiting text has waited this long (the adaptive wait's cap)",
    )
    batch_wait: Literal["adaptive", "fixed"] = Field(
        "adaptive",
        description="adaptive: wait only while the fitted cost model says more texts will join in time; "
        "fixed: always wait max_wait_ms",
    )
    target_latency_ms: float = Field(
        150.0,
        gt=0,
        description="Adaptive wait never delays a batch past this (oldest wait + predicted compute)",
    )
    priority_aging_ms: float = Field(
        1_000.0, ge=0, description="A waiting text moves up one priority class per this many ms; 0 = never"
    )
    transport_batch_size: int = Field(64, ge=1, description="Requests per Celery message sent by the intake")

    # --- Generation (task generate: continuous batching) ---------------------------------------
    generate_batching: Literal["continuous", "static"] = Field(
        "continuous",
        description="continuous: requests join the running batch between decode steps and leave when "
        "done; static: a new batch starts only when the whole running one has finished",
    )
    generate_max_running: int = Field(16, ge=1, description="Sequences decoded together in one step")
    generate_max_batch_tokens: int = Field(
        16_384,
        ge=16,
        description="KV-cache budget: a sequence joins only while the running ones' prompt + "
        "max_new_tokens, summed, stay within this",
    )
    generate_max_new_tokens: int = Field(
        512, ge=1, description="Largest max_new_tokens a request may ask for (more → validation_error)"
    )
    generate_max_prompt_tokens: int = Field(
        1_024, ge=1, description="Longest prompt in tokens (longer → the request fails validation_error)"
    )
    generate_stream_interval_ms: float = Field(
        50.0,
        gt=0,
        description="How often the text so far is written to Redis (and cancellations are read)",
    )
    generate_model_dir: str = Field(
        "", description="Hub-style folder (config, tokenizer, weights) served as model causal-lm"
    )

    # --- Worker ------------------------------------------------------------------------------
    worker_models: str = Field(
        "all-MiniLM-L6-v2,minilm-intent,tiny-lm",
        description="Comma-separated models this worker loads and serves",
    )
    worker_concurrency: int = Field(16, ge=1, description="Celery messages a worker holds at once (threads)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    local_kafka: Literal["noida", "tansu"] = Field(
        "noida",
        description="Kafka-protocol server of the local stack: noida-db (on disk) or Tansu (memory only)",
    )
    intake_replicas: int = Field(
        1,
        ge=1,
        description="Intake processes the local stack starts (one consumer group shares the partitions)",
    )
    worker_processes: int = Field(
        1, ge=1, description="Worker processes on this host (the local stack starts this many)"
    )
    torch_threads: int = Field(
        0, ge=0, description="Intra-op threads for torch on CPU; 0 = cores ÷ worker_processes (at least 1)"
    )
    model_max_length_tokens: int = Field(256, ge=8, description="Inputs are truncated to this many tokens")
    encoder_graph: Literal["torchscript", "eager"] = Field(
        "torchscript",
        description="torchscript: encoders run as a graph traced at load (checked against eager mode; "
        "no Python, no GIL between ops); eager: plain transformers modules",
    )
    requeue_queued_after_s: float = Field(
        120.0,
        gt=0,
        description="A request still queued this long after admission is sent to its Celery queue again "
        "(its message was lost with a worker killed as it took it); keep it above the longest queue wait",
    )
    republish_unseen_after_s: float = Field(
        30.0,
        gt=0,
        description="A request the API admitted and published that no intake has read this long after, "
        "while the intake has committed past where it would be, is published to Kafka again (the broker "
        "lost it)",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="A request whose worker died this many times while running it is failed as poison "
        "and dead-lettered instead of being run again",
    )

    # --- Request limits ----------------------------------------------------------------------
    max_inputs_per_request: int = Field(64, ge=1)
    max_text_chars: int = Field(20_000, ge=1)

    # --- HTTP result API / Flower / Elasticsearch ---------------------------------------------
    api_host: str = "127.0.0.1"
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated tenant:sha256(key) pairs; empty = no authentication (local use only)",
    )
    api_max_body_bytes: int = Field(1_048_576, ge=1_024, description="Larger HTTP bodies are refused (413)")
    api_cors_origins: str = Field("", description="Comma-separated origins allowed by CORS; empty = CORS off")
    api_port: int = 18080
    api_max_waits_per_tenant: int = Field(
        64, ge=1, description="Open long polls (GET ?wait_ms) one tenant (or API key) may hold; more get 429"
    )
    api_max_waits: int = Field(
        2_000, ge=1, description="Open long polls the API process holds in all; more get 429"
    )
    flower_port: int = 15555
    flower_user: str = "admin"
    flower_password: SecretStr = Field(
        SecretStr(""),
        description="Flower basic-auth password; empty: the local stack generates one per state folder "
        "(<state_dir>/flower.password, mode 0600); deployments must set it",
    )
    elasticsearch_url: str = Field(
        "http://127.0.0.1:19200", description="Elasticsearch-API endpoint for logs (https:// for TLS)"
    )
    elasticsearch_api_key: SecretStr = Field(
        SecretStr(""), description="Elasticsearch API key (base64 id:key) for shipping logs; never logged"
    )
    elasticsearch_ca_certs: str = Field("", description="CA bundle for an https:// Elasticsearch")

    # --- Logs (ECS JSON to stderr, shipped to Elasticsearch) and metrics -------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_ship: bool = Field(True, description="Ship every process's log records to Elasticsearch")
    log_queue_max_records: int = Field(
        20_000, ge=100, description="Records waiting to ship; beyond this they are dropped and counted"
    )
    log_bulk_max_records: int = Field(500, ge=1, description="Records per bulk request")
    log_flush_interval_ms: int = Field(1_000, ge=10, description="Longest a record waits to be shipped")
    log_retry_max_s: float = Field(30.0, gt=0, description="Cap of the backoff while Elasticsearch is down")
    log_spool_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1_024, description="Disk spool per process while Elasticsearch is down"
    )
    log_inputs: bool = Field(
        False, description="Add a masked preview of each input (first 8 chars, length, digest) to logs"
    )
    metrics_port: int = Field(19108, description="Prometheus exporter (inferq-exporter) port")
    prometheus_port: int = Field(19090, description="Prometheus, when the local stack starts it")
    intake_stalled_after_s: float = Field(
        60.0,
        gt=0,
        description="An intake that has not polled Kafka for this long is reported down "
        "(inferq_intake_up 0; `inferq-ops status` not ready)",
    )
    kibana_password: SecretStr = Field(
        SecretStr(""), description="Password for `inferq-ops kibana --user` (not on the command line)"
    )
    kibana_api_key: SecretStr = Field(
        SecretStr(""), description="API key for `inferq-ops kibana` (instead of user/password)"
    )
    metrics_read_live: bool = Field(
        True,
        description="The exporter also reads Kafka lag, queue depth, in flight, workers up (one per cluster)",
    )

    # --- Local stack -------------------------------------------------------------------------
    state_dir: Path = Field(Path(".inferq"), description="Where `inferq-ops up` keeps data, pids and logs")

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
