"""A job's done flag behaves as threading.Event does for its three uses."""

from __future__ import annotations

import threading

from workers.core.jobs import Done


def test_done_waits_until_set_and_times_out_before() -> None:
    done = Done()
    assert not done.is_set() and done.wait(0.01) is False
    waiters = [threading.Thread(target=lambda: seen.append(done.wait(10))) for _ in range(3)]
    seen: list[bool] = []
    for t in waiters:
        t.start()
    done.set()
    done.set()  # again: harmless
    for t in waiters:
        t.join(10)
    assert seen == [True, True, True] and done.is_set() and done.wait(0) is True and done.wait() is True


def test_done_set_from_many_threads_at_once_stays_set() -> None:
    for _ in range(200):
        done = Done()
        setters = [threading.Thread(target=done.set) for _ in range(4)]
        for t in setters:
            t.start()
        assert done.wait(5)
        for t in setters:
            t.join(5)
        assert done.is_set() and done.wait(0)
