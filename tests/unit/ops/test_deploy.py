"""Offline checks of the deployment files: schemas, and the names and ports the code really reads."""

from __future__ import annotations

import configparser
import importlib
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from schemas.naming import model_queue, requests_topic
from schemas.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "ops" / "deploy"
FIELDS = set(Settings.model_fields)
K8S_VERSION = "1.30.0"


def k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "inferq.yaml").read_text()) if d]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def documented_secret() -> dict[str, str]:
    """The Secret's keys and placeholder values, as the manifest's header tells operators to write them."""
    text = (DEPLOY / "k8s" / "inferq.yaml").read_text()
    body = text.split("cat > inferq-credentials.env <<'END'\n", 1)[1].split("#   END\n", 1)[0]
    pairs = (line.removeprefix("#").strip().split("=", 1) for line in body.splitlines())
    return {k: v for k, v in pairs}


def inferq_vars(text: str) -> set[str]:
    return set(re.findall(rf"\b{ENV_PREFIX}([A-Z0-9_]+)\b", text))


def test_compose_file_matches_the_compose_spec():
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose()), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_compose_has_every_service_the_issue_names():
    services = set(compose()["services"])
    assert {
        "kafka",
        "redis",
        "elasticsearch",
        "kibana",
        "flower",
        "prometheus",
        "grafana",
        "intake",
        "delivery",
        "api",
        "exporter",
        "worker-gpu",
    } <= services
    gpu = compose()["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert (
        compose()["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    )  # KRaft


@pytest.mark.parametrize("name", ["compose.yaml", "k8s/inferq.yaml", "Dockerfile.cpu", "Dockerfile.gpu"])
def test_every_setting_a_deployment_file_sets_exists(name):
    used = {v.lower() for v in inferq_vars((DEPLOY / name).read_text())}
    assert used <= FIELDS, f"{name} sets variables no code reads: {sorted(used - FIELDS)}"


def test_ports_and_names_are_the_ones_the_code_uses():
    s = Settings()
    env = compose()["x-inferq-env"]
    assert int(env["INFERQ_API_PORT"]) == s.api_port and int(env["INFERQ_METRICS_PORT"]) == s.metrics_port
    assert compose()["services"]["api"]["ports"] == [f"127.0.0.1:{s.api_port}:{s.api_port}"]
    prom = yaml.safe_load((ROOT / "ops" / "assets" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert f"exporter:{s.metrics_port}" in targets

    docs = k8s_docs()
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    deployed = Settings(**{k[len(ENV_PREFIX) :].lower(): v for k, v in config.items()})
    ports = {
        p["containerPort"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert {deployed.api_port, deployed.metrics_port} <= ports
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        for trig in so["spec"]["triggers"]:
            meta = trig["metadata"]
            if trig["type"] == "kafka":
                assert (
                    meta["topic"] == requests_topic(deployed)
                    and meta["consumerGroup"] == deployed.kafka_group_id
                )
                assert meta["bootstrapServers"] == deployed.kafka_bootstrap_servers
            if trig["type"] == "redis":
                queues = {model_queue(deployed, m) for m in deployed.model_names()}
                assert meta["listName"] in queues
                assert documented_secret()["INFERQ_CELERY_BROKER_URL"].endswith("/" + meta["databaseIndex"])


def test_kubernetes_objects_validate_against_the_kubernetes_schemas():
    builtin = [d for d in k8s_docs() if not d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in builtin} >= {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    for d in builtin:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_keda_objects_scale_deployments_that_exist():
    docs = k8s_docs()
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    auths = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert (
        {d["spec"]["scaleTargetRef"]["name"] for d in scaled}
        == {"inferq-intake", "inferq-worker"}
        <= deployments
    )
    kinds = {t["type"] for d in scaled for t in d["spec"]["triggers"]}
    assert kinds == {"kafka", "redis"}
    for d in scaled:
        assert 1 <= d["spec"]["minReplicaCount"] <= d["spec"]["maxReplicaCount"]
        for t in d["spec"]["triggers"]:
            ref = t.get("authenticationRef")
            assert ref is None or ref["name"] in auths


def test_worker_pods_ask_for_a_gpu_and_are_ready_only_after_warm_up():
    worker = next(
        d for d in k8s_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "inferq-worker"
    )
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    probe = container["readinessProbe"]["exec"]["command"]
    assert (
        probe[-2:] == ["-m", "workers.celery_adapter.health"]
        and importlib.import_module("workers.celery_adapter.health").ready
    )
    names = {e["name"] for e in container["env"]}
    assert "INFERQ_DEVICE" in names


def test_images_copy_what_exists_and_run_installed_commands():
    scripts = configparser.ConfigParser()
    scripts.read(ROOT / "setup.cfg")
    commands = {
        line.split("=")[0].strip()
        for line in scripts["options.entry_points"]["console_scripts"].split("\n")
        if line
    }
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (DEPLOY / name).read_text()
        for src in re.findall(r"^COPY (\S+) ", text, flags=re.M):
            if "*" not in src:
                assert (ROOT / src).exists(), f"{name} copies missing {src}"
        assert "torch==2.13.0" in text
    used = {c for d in k8s_docs() if d["kind"] == "Deployment" for c in _commands(d)}
    used |= {
        s["command"][0] for s in compose()["services"].values() if s.get("image", "").startswith("inferq")
    }
    assert {c for c in used if c.startswith("inferq-")} <= commands


def _commands(deployment: dict[str, Any]) -> list[str]:
    return [c["command"][0] for c in deployment["spec"]["template"]["spec"]["containers"]]


# --- secure defaults (issue 15, point 14) ------------------------------------------------------------

SECRETS = {
    "INFERQ_API_KEYS",
    "INFERQ_FLOWER_PASSWORD",
    "ELASTIC_PASSWORD",
    "KIBANA_PASSWORD",
    "LOGS_ES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
}


def test_compose_publishes_every_port_on_loopback_only():
    published = {name: svc["ports"] for name, svc in compose()["services"].items() if svc.get("ports")}
    assert {"api", "kibana", "prometheus", "grafana", "exporter", "flower"} <= set(published)
    for name, ports in published.items():
        for port in ports:
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
            host = spec.rsplit(":", 2)[0] if spec.count(":") == 2 else ""
            assert host == "127.0.0.1", f"{name} publishes {spec!r} beyond loopback"


def test_compose_refuses_to_start_without_each_secret():
    text = (DEPLOY / "compose.yaml").read_text()
    for var in SECRETS:
        uses = re.findall(rf"\$\{{{var}(:?[-?=+]?)", text)
        assert uses, f"{var} is not used"
        assert set(uses) == {":?"}, f"{var} must be required (${{{var}:?...}}) everywhere: {uses}"
    assert not re.search(r"\$\{[A-Z_]*(PASSWORD|KEY)[A-Z_]*:-", text), "a secret with a default value"
    assert "inferq-local" not in text and "CHANGE-ME" not in text
    services = compose()["services"]
    es = services["elasticsearch"]["environment"]
    assert es["xpack.security.enabled"] == "true"
    assert services["kibana"]["environment"]["ELASTICSEARCH_PASSWORD"].startswith("${KIBANA_PASSWORD:?")
    assert compose()["x-inferq-env"]["INFERQ_API_KEYS"].startswith("${INFERQ_API_KEYS:?")
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD:?"
    )
    # Kafka, Redis and Elasticsearch have no login here: they must not be published at all
    assert not any(services[n].get("ports") for n in ("kafka", "redis", "elasticsearch"))


def test_kubernetes_manifests_hold_no_secret_values():
    text = (DEPLOY / "k8s" / "inferq.yaml").read_text()
    assert "CHANGE-ME" not in text and "inferq-local" not in text
    docs = k8s_docs()
    assert not [d for d in docs if d["kind"] == "Secret"], "create the Secret with kubectl (see the header)"
    for d in (d for d in docs if d["kind"] == "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            refs = [e["secretRef"] for e in c.get("envFrom", []) if "secretRef" in e]
            assert refs == [{"name": "inferq-credentials"}], (d["metadata"]["name"], refs)  # not optional
    documented = documented_secret()
    needed = {
        ref["key"]
        for d in docs
        if d["kind"] == "TriggerAuthentication"
        for ref in d["spec"]["secretTargetRef"]
    }
    assert needed | {"INFERQ_REDIS_URL", "INFERQ_CELERY_BROKER_URL", "INFERQ_API_KEYS"} <= set(documented)
    assert all(v.startswith("<") or "<" in v for v in documented.values()), documented  # placeholders only
    assert "--from-literal" not in text  # a literal would be in the shell history and in `ps`
