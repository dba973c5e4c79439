"""The Celery adapter's process set-up (no broker needed: the app connects lazily)."""

from __future__ import annotations

import gc

from workers.celery_adapter.tasks import freeze_startup_heap


def test_the_start_up_heap_is_frozen_and_later_garbage_is_still_collected():
    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # modules, classes, Celery's app: out of every collection

        class Cycle:
            pass

        a, b = Cycle(), Cycle()
        a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
        del a, b
        assert gc.collect() >= 2  # a request's cyclic garbage is collected as before
    finally:
        gc.unfreeze()
