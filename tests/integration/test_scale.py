"""Several intake replicas in one consumer group, and a rebalance in the middle of a run."""

from __future__ import annotations

import signal

from ops.stack import Stack
from schemas.messages import ResultStatus
from tests.integration.conftest import eventually

MODELS = ("all-MiniLM-L6-v2", "minilm-intent")


def test_a_rebalance_mid_run_loses_nothing_and_each_model_gets_its_own(client, stack, settings):
    two = Stack(settings.model_copy(update={"intake_replicas": 2}))
    try:
        first = [client.submit("embed", MODELS[0], f"before the rebalance {i}") for i in range(400)]
        client.flush()
        two.up(only=["intake-2"])  # joins the group: partitions move while records flow
        second = [
            client.submit("classify" if i % 2 else "embed", MODELS[i % 2], f"during the rebalance {i}")
            for i in range(400)
        ]
        client.flush()
        eventually(
            lambda: client.result(first[-1]) is not None and client.result(first[-1]).status.terminal,
            120,
            "the first wave",
        )
        stack.kill("intake", signal.SIGTERM)  # graceful leave: commits, then the group rebalances again
        eventually(lambda: stack.pid("intake") is None, 30, "the first intake to stop")
        third = [client.submit("embed", MODELS[0], f"after the first intake left {i}") for i in range(200)]
        ids = first + second + third
        results = client.wait_all(ids, timeout_s=300)
        assert len(results) == len(ids) == len(set(ids))
        assert {r.status for r in results.values()} == {ResultStatus.DONE}
        # each request ran on its own model's queue and worker engine
        for rid, r in results.items():
            assert r.model in MODELS and (r.task.value == "classify") == (r.model == "minilm-intent"), rid
    finally:
        if two.pid("intake-2"):
            two.kill("intake-2", signal.SIGTERM)
        eventually(lambda: two.pid("intake-2") is None, 30, "the second intake to stop")
        (stack.run_dir / "intake-2.pid").unlink(missing_ok=True)
        stack.up(only=["intake"])  # the session's stack as it was
