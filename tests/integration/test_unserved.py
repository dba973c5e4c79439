"""On a real broker, Redis and intake, with one model advertised by a worker that never takes its
messages (so what is admitted stays ``queued``): requests for a model nobody serves, and one
tenant's flood, must not hold anyone else's traffic (issue 15, points 4 and 5)."""

from __future__ import annotations

import pytest
import redis

from producers.client import InferqClient
from schemas.errors import ErrorCode
from schemas.messages import ResultStatus
from schemas.settings import Settings
from tests.stack import dead_letters, eventually, intake_only
from workers.store.presence import advertise

BOUND = 8  # per model, for the whole intake
TENANT_MAX = 3
SERVED, UNSERVED = "all-MiniLM-L6-v2", "minilm-intent"


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    base = Settings(
        kafka_partitions=2,
        kafka_session_timeout_ms=6_000,
        backpressure_max_inflight=BOUND,
        unserved_model_grace_s=2.0,
        tenant_max_inflight=TENANT_MAX,
        tenant_limits="open=0:0",  # the unserved-model test's tenant: no limit of its own
        log_ship=False,
    )
    with intake_only(base, tmp_path_factory.mktemp("unserved")) as settings:
        # a worker that serves SERVED and never takes a message (none runs in this stack)
        advertise(redis.Redis.from_url(settings.redis_url), settings, "idle-worker", [SERVED], ttl_s=3_600)
        yield settings


def submit(client: InferqClient, model: str, text: str, tenant: str | None = "open") -> str:
    task = "classify" if model == UNSERVED else "embed"
    return client.submit(task, model, text, tenant=tenant)


def test_requests_for_a_model_nobody_serves_fail_fast_and_never_pause_the_others(held):
    with InferqClient(held) as client:

        def probe() -> bool:  # the intake's start-up grace ends within seconds of its start
            rid = submit(client, UNSERVED, "is anyone serving this?")
            eventually(lambda: client.result(rid), what="the probe answered")
            res = client.result(rid)
            return res is not None and res.error is not None and res.error.code is ErrorCode.MODEL_UNAVAILABLE

        eventually(probe, what="the start-up grace to end")
        # probes admitted during the grace stay queued (no worker sweeps them here)
        before = client.store.in_flight_by_model([UNSERVED])
        flood = [submit(client, UNSERVED, f"nobody serves me {i}") for i in range(3 * BOUND)]
        results = client.wait_all(flood, timeout_s=30)
        assert {r.status for r in results.values()} == {ResultStatus.FAILED}
        assert {r.error.code for r in results.values()} == {ErrorCode.MODEL_UNAVAILABLE}
        letters = dead_letters(held, set(flood[:3]))
        assert {letters[rid].error.code for rid in flood[:3]} == {ErrorCode.MODEL_UNAVAILABLE}
        assert client.store.in_flight_by_model([UNSERVED]) == before  # none admitted, none held
        # before: they filled UNSERVED's bound and paused every partition; the served model's
        # request behind them was never read
        served = submit(client, SERVED, "behind the flood, for a served model")
        assert eventually(
            lambda: client.result(served), what="the served model's request admitted"
        ).status is (ResultStatus.QUEUED)
        client.cancel(served)


def test_one_tenants_flood_is_refused_past_its_limit_and_slows_no_other_tenant(held):
    with InferqClient(held) as client:
        flood = [submit(client, SERVED, f"flood {i}", tenant="flooder") for i in range(4 * BOUND)]
        client.flush()
        calm = submit(client, SERVED, "one calm request", tenant="calm")
        # before: the flood's first BOUND requests filled the model's bound, the intake paused every
        # partition, and the calm tenant's request was never admitted
        assert (
            eventually(lambda: client.result(calm), what="the calm tenant admitted").status
            is ResultStatus.QUEUED
        )
        results = {
            rid: eventually(lambda rid=rid: client.result(rid), what="the flood answered") for rid in flood
        }
        by_status = [r.status for r in results.values()]
        assert by_status.count(ResultStatus.QUEUED) == TENANT_MAX
        refused = [r for r in results.values() if r.status is ResultStatus.FAILED]
        assert len(refused) == 4 * BOUND - TENANT_MAX
        assert {r.error.code for r in refused} == {ErrorCode.QUOTA_EXCEEDED}
        assert "flooder" in refused[0].error.message
        assert client.store.tenant_usage("flooder")[0] == TENANT_MAX
        for rid in [*flood, calm]:
            client.cancel(rid)
        assert client.store.tenant_usage("flooder")[0] == 0  # cancelling released them
