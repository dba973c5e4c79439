"""Settings of result delivery beyond Redis: reply topics, the deployment-wide results topic, the
outbox and the delivery service's retries."""

from __future__ import annotations

from pydantic import BaseModel, Field

# one INFERQ_REPLY_TOPICS entry: an optional tenant (the request schema's name pattern) or `*`,
# then a topic name (Kafka's characters), a prefix ending in `*`, or `*` alone
_ENTRY = r"(?:(?:\*|[A-Za-z0-9][A-Za-z0-9_.:/-]*):)?(?:[A-Za-z0-9._-]+\*?|\*)"


class DeliverySettings(BaseModel):
    """Where terminal results are also sent, and how hard the delivery service tries."""

    # --- Delivery: reply topics and the delivery service ---------------------------------------
    results_topic: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_-][A-Za-z0-9._-]{0,248})?$",
        description=(
            "Publish every terminal result (key = request id, value = the stored result JSON) to this "
            "Kafka topic, besides any `reply_topic` a request names; recorded at admission. Empty = off"
        ),
    )
    reply_topics: str = Field(
        "",
        max_length=65_536,
        # entries `tenant:topic`, `tenant:prefix*`, `*:...` or `topic` (checked here, so a typo stops
        # the process at start instead of refusing requests)
        pattern=r"^\s*(?:" + _ENTRY + r")?\s*(?:,\s*(?:" + _ENTRY + r")?\s*)*$",
        description=(
            "Which `reply_topic` each tenant may name, comma separated: `tenant:topic` (exact), "
            "`tenant:prefix*` (any topic starting with the prefix); `*:...` applies to every tenant and "
            "to requests without one; an entry without `tenant:` is for requests without a tenant. "
            "Anything else is refused `reply_topic_refused`, as are the pipeline's own topics. Empty = "
            "no request may name a reply topic"
        ),
    )
    outbox_max_entries: int = Field(
        100_000,
        ge=1,
        description=(
            "Terminal results waiting for the delivery service, at most; past it a result is still "
            "written but not delivered, and counted (`<p>:outbox:refused`, "
            "`inferq_outbox_refused`)"
        ),
    )
    delivery_max_s: float = Field(
        600.0,
        gt=0,
        description=(
            "How long after a result became terminal its delivery is still retried; then it is recorded "
            'undeliverable (`inferq_deliveries{outcome="failed"}` and an ECS record)'
        ),
    )
    delivery_retry_initial_s: float = Field(
        0.5, gt=0, description="First wait before retrying a failed delivery; it doubles each try"
    )
    delivery_retry_max_s: float = Field(30.0, gt=0, description="Longest wait between two tries")
    delivery_batch_max_entries: int = Field(
        256, ge=1, description="Outbox entries one delivery process reads (and sends) at once"
    )
    delivery_claim_idle_s: float = Field(
        30.0,
        gt=0,
        description=(
            "An outbox entry read by a delivery process and not touched for this long is taken over by "
            "another (its process died); a live process touches what it holds far more often"
        ),
    )
    delivery_consumer_name: str = Field(
        "",
        max_length=200,
        description=(
            "This delivery process's name in the outbox's consumer group; stable per replica, so one "
            "restarted (even after `kill -9`) takes back its own unfinished entries at once (the local "
            "stack sets `delivery@<host>`). Empty = `<host>-<pid>`"
        ),
    )
    delivery_create_topics: bool = Field(
        False,
        description=(
            "Let the delivery service's producer ask the broker to create a reply topic that does not "
            "exist (where the broker allows it). Off: an operator creates reply topics, so a tenant "
            "allowed a prefix (`acme.*`) cannot make one topic per request; a send to a missing topic "
            "is retried, then recorded undeliverable"
        ),
    )
    delivery_concurrency: int = Field(
        32,
        ge=1,
        le=1024,
        description=(
            "Webhook tries one delivery process runs at once (threads); the dispatcher never waits on "
            "them, so a slow receiver holds a thread, not the other deliveries"
        ),
    )
    delivery_max_per_host: int = Field(
        8,
        ge=1,
        le=1024,
        description=(
            "Webhook tries in flight to one callback host at once, per delivery process (a slow or "
            "hostile receiver holds at most this many of the `delivery_concurrency` threads)"
        ),
    )
    delivery_send_timeout_s: float = Field(
        10.0, gt=0, description="Longest the delivery service waits for one batch of sends to be acknowledged"
    )
