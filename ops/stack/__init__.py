"""The local stack: start, watch and stop every service as a child process.

Services, in start order: ``broker`` (noida-db: Kafka protocol + Elasticsearch API, data on disk),
``redis`` (redis-server, append-only file on), ``worker`` (Celery, models warmed), ``intake``,
``api`` and ``flower``. Each runs in its own process group with its pid and start time recorded
under ``<state_dir>/run``, so ``down`` stops exactly what ``up`` started and never a recycled pid.
Logs go to ``<state_dir>/logs/<service>.log``; data to ``<state_dir>/data``.

The state folder and everything in it is private to its owner (:mod:`ops.state`).

``up`` returns only when every service it started is ready and still alive a moment later
(``SETTLE_S``); an intake is ready once it has polled Kafka (its liveness stamp,
:mod:`workers.telemetry.liveness`), and ``status`` reports it not ready when it stopped polling.

One module per concept: the service table (:mod:`ops.stack.services`), the lifecycle
(:mod:`ops.stack.lifecycle`, :class:`Stack`), child processes and pid files
(:mod:`ops.stack.processes`), readiness probes (:mod:`ops.stack.probes`), the environment and ports
(:mod:`ops.stack.env`).
"""

from ops.stack.env import LOCAL_TRIM_EVERY_S, free_port, on_free_ports, settings_env
from ops.stack.lifecycle import SETTLE_S, Stack
from ops.stack.services import WORKER_PREFIX, Service, noida_binary, redis_binary

__all__ = [
    "LOCAL_TRIM_EVERY_S",
    "SETTLE_S",
    "WORKER_PREFIX",
    "Service",
    "Stack",
    "free_port",
    "noida_binary",
    "on_free_ports",
    "redis_binary",
    "settings_env",
]
