"""The Prometheus configuration the local stack runs with, rendered from the shipped assets."""

from __future__ import annotations

import json
import shutil
from importlib.resources import files
from pathlib import Path

from schemas.settings import Settings

ASSETS = files("ops") / "assets" / "prometheus"


def render_prometheus_config(settings: Settings, folder: Path) -> Path:
    """Write ``prometheus.yml`` (loopback targets) and ``alerts.yml`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    alerts = folder / "alerts.yml"
    shutil.copyfile(str(ASSETS / "alerts.yml"), alerts)
    alerts.chmod(0o600)
    password = folder / "flower_password"
    password.touch(mode=0o600)
    password.chmod(0o600)  # before the secret is in it
    password.write_text(settings.flower_password.get_secret_value())
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(alerts)],
        "scrape_configs": [
            {"job_name": "inferq", "static_configs": [{"targets": [f"127.0.0.1:{settings.metrics_port}"]}]},
            {
                "job_name": "flower",
                "basic_auth": {"username": settings.flower_user, "password_file": str(password)},
                "static_configs": [{"targets": [f"127.0.0.1:{settings.flower_port}"]}],
            },
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    path.chmod(0o600)
    return path
