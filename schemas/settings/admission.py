"""Settings of admission: backpressure, tenant limits and the limits on one request."""

from __future__ import annotations

from pydantic import BaseModel, Field


class AdmissionSettings(BaseModel):
    """What the intake and the API admit: backpressure, per-tenant limits, request limits."""

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

    # --- Request limits ----------------------------------------------------------------------
    max_inputs_per_request: int = Field(
        64, ge=1, description="More inputs in one request → `validation_error`"
    )
    max_text_chars: int = Field(20_000, ge=1, description="A longer input → `validation_error`")
