"""Several intake replicas and workers sharing one pipeline, and a rebalance in the middle of a run."""

from __future__ import annotations

import signal

from elasticsearch import Elasticsearch

from ops.stack import Stack
from schemas.messages import ResultStatus
from schemas.naming import log_index
from tests.stack import eventually

MODELS = ("all-MiniLM-L6-v2", "minilm-intent")


def test_a_rebalance_mid_run_loses_nothing_and_each_model_gets_its_own(client, stack, settings):
    two = Stack(settings.model_copy(update={"intake_replicas": 2, "worker_processes": 2}))
    try:
        two.up(only=["worker-2"])  # a second worker process on the same model queues
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
        # both worker processes ran batches of this run (their batch records name the process)
        es = Elasticsearch(settings.elasticsearch_url)
        batch_ids = sorted({r.timings.batch_id for r in results.values()})

        def worker_pids() -> set[int]:
            es.indices.refresh(index=log_index(settings))
            hits = es.search(
                index=log_index(settings),
                size=0,
                query={"terms": {"inferq.batch_id": batch_ids}},
                aggs={"pids": {"terms": {"field": "process.pid", "size": 10}}},
            )["aggregations"]["pids"]["buckets"]
            return {int(b["key"]) for b in hits} if len(hits) >= 2 else set()

        assert len(eventually(worker_pids, 30, "batch records from both workers")) == 2
    finally:
        if two.pid("worker-2"):
            two.kill("worker-2", signal.SIGTERM)
        if two.pid("intake-2"):
            two.kill("intake-2", signal.SIGTERM)
        eventually(
            lambda: two.pid("intake-2") is None and two.pid("worker-2") is None,
            60,
            "the extra processes to stop",
        )
        for extra in ("intake-2", "worker-2"):
            (stack.run_dir / f"{extra}.pid").unlink(missing_ok=True)
        stack.up(only=["intake"])  # the session's stack as it was
