"""What every child process of the local stack is given: the settings as environment variables,
and fresh loopback ports for a stack that must not clash with another."""

from __future__ import annotations

import socket
from pathlib import Path

from schemas.settings import ENV_PREFIX, Settings

LOCAL_TRIM_EVERY_S = 2.0  # how often the local intakes trim what they committed (workers/intake/trim.py)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``INFERQ_*`` variables, so every child reads exactly what the parent has."""
    env = {}
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env


def free_port() -> int:
    """A TCP port free on loopback right now (for stacks that must not clash with another)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_free_ports(settings: Settings, state_dir: Path) -> Settings:
    """``settings`` with every service on a fresh loopback port and its own state folder."""
    redis_port = free_port()
    # the result cache's own redis-server moves too, when one is configured (issue 20)
    cache = {"cache_redis_url": f"redis://127.0.0.1:{free_port()}/0"} if settings.cache_redis_url else {}
    return settings.model_copy(
        update={
            **cache,
            "state_dir": state_dir,
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "elasticsearch_url": f"http://127.0.0.1:{free_port()}",
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "celery_broker_url": f"redis://127.0.0.1:{redis_port}/1",
            "api_port": free_port(),
            "flower_port": free_port(),
            "metrics_port": free_port(),
            "prometheus_port": free_port(),
        }
    )
