"""Graceful drain: SIGTERM to a worker or the intake in the middle of a run loses nothing."""

from __future__ import annotations

import signal

from schemas.messages import ResultStatus
from tests.stack import eventually

MODEL = "all-MiniLM-L6-v2"


def statuses(client, ids: list[str]) -> dict[ResultStatus, int]:
    out: dict[ResultStatus, int] = {}
    for r in client.store.get_many(ids).values():
        if r is not None:
            out[r.status] = out.get(r.status, 0) + 1
    return out


def test_sigterm_to_the_worker_finishes_what_it_took_and_loses_nothing(client, stack):
    ids = [client.submit("embed", MODEL, f"drain the worker {i}") for i in range(300)]
    client.flush()
    eventually(lambda: statuses(client, ids).get(ResultStatus.DONE, 0) >= 20, 60, "the first results")
    stack.kill("worker", signal.SIGTERM)
    eventually(lambda: stack.pid("worker") is None, 120, "the worker to finish and exit")
    # what it had started it finished: nothing is left half-done
    left = statuses(client, ids)
    assert left.get(ResultStatus.RUNNING, 0) == 0, left
    assert left.get(ResultStatus.FAILED, 0) == 0, left
    stack.up(only=["worker"])  # anything it had not taken waited in Redis for the next worker
    results = client.wait_all(ids, timeout_s=180)
    assert {r.status for r in results.values()} == {ResultStatus.DONE}


def test_sigterm_to_the_intake_commits_and_a_restart_picks_up_the_rest(client, stack):
    first = [client.submit("embed", MODEL, f"drain the intake {i}") for i in range(150)]
    client.flush()
    stack.kill("intake", signal.SIGTERM)
    eventually(lambda: stack.pid("intake") is None, 30, "the intake to stop")
    second = [client.submit("embed", MODEL, f"while no intake runs {i}") for i in range(50)]
    client.flush()
    stack.up(only=["intake"])
    results = client.wait_all(first + second, timeout_s=180)
    assert {r.status for r in results.values()} == {ResultStatus.DONE}
