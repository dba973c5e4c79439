"""Settings of the Kafka side: brokers, the consumer group, TLS and SASL, lost records and
tenant signing."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class KafkaSettings(BaseModel):
    """Kafka brokers, the intake's consumer group and its polling, security, lost records."""

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap `host:port` list")
    kafka_client: Literal["kafka-python", "confluent"] = Field(
        "kafka-python",
        description=(
            "The Kafka client library of the intake (its consumer, its dead-letter producer and its "
            "read-backs) and of `InferqClient`'s producer: `kafka-python` (pure Python, always "
            "installed) or `confluent` (librdkafka, `pip install inferq[fast]`: far less CPU per record)"
        ),
    )
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
