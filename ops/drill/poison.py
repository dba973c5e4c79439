"""The ``poison`` drill: hostile records between valid requests, through Kafka and HTTP.

A stack of its own (broker, Redis, worker, intake, API; ``INFERQ_KAFKA_TENANT_AUTH=signed`` and API
keys, so forged tenants are refused on both paths) takes ``requests`` valid requests, one in ten
over ``POST /v1/requests`` and the rest over Kafka signed by their tenant, with one hostile record
of each kind after every ``requests / (rounds)`` valid ones, on both paths. An intake that dies is
started again, as a supervisor would, and counted (``intake_restarts``). At the end every valid
request must be terminal (``lost`` = those that are not), and each hostile kind says how it was
answered: Kafka records by their result (``result:<status>/<code>``) or dead letter
(``dead_letter:<code>``) or ``unanswered``; HTTP bodies by status code (``http:<status>/<code>``;
``http:error`` when the API did not answer).
"""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from pydantic import SecretStr

from ops.drill.letters import read_dead_letters
from ops.drill.traffic import Ledger, drill_request
from ops.stack import Stack, on_free_ports
from producers.auth import digest, new_key
from producers.client import InferqClient
from schemas.connections import kafka_options
from schemas.messages import InferenceRequest
from schemas.naming import requests_topic, scoped_id
from schemas.settings import Settings
from schemas.tenancy import signed_headers

SERVICES = ["broker", "redis", "worker", "intake", "api"]
TENANT, OTHER = "drill-a", "drill-b"
HTTP_SHARE = 10  # one valid request in this many goes over HTTP
BAD_UTF8 = b"\xff\xfe" * 200_000  # 400 KB that is not UTF-8
UNSIGNED = "unsigned"  # the kind sent without credentials (a foreign producer, an anonymous caller)
UNSERVED_GRACE_S = 10.0
ROUNDS = 3  # each hostile kind is sent this many times on each path, spread through the traffic


def _base(rid: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": 1,
        "request_id": rid,
        "task": "embed",
        "model": "all-MiniLM-L6-v2",
        "inputs": "a hostile neighbour",
        "tenant": TENANT,
    }
    body.update(over)
    return body


def _json(rid: str, **over: Any) -> bytes:
    return json.dumps(_base(rid, **over)).encode()


def hostile_kinds(valid: Callable[[], InferenceRequest]) -> dict[str, Callable[[str], bytes | None]]:
    """Each kind: request id → the record value (None = a tombstone). ``valid`` gives a request
    already admitted (for the duplicate id with other content)."""
    return {
        "deep_nesting": lambda rid: b"[" * 50_000,
        "deep_object": lambda rid: b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        "huge_int": lambda rid: _json(rid)[:-1] + b', "top_k": ' + b"9" * 5_000 + b"}",
        "invalid_utf8_400k": lambda rid: b'{"request_id": "%s", "x": "%s"}' % (rid.encode(), BAD_UTF8),
        "tombstone": lambda rid: None,
        "non_object_json": lambda rid: b'[1, 2, {"request_id": "' + rid.encode() + b'"}]',
        "unknown_model": lambda rid: _json(rid, model="no-such-model"),
        "unserved_model": lambda rid: _json(rid, task="generate", model="causal-lm"),
        "wrong_schema_version": lambda rid: _json(rid, schema_version=99),
        "huge_inputs_list": lambda rid: _json(rid, inputs=["x"] * 100_000),
        "over_long_text": lambda rid: _json(rid, inputs="word " * 180_000),
        "forged_tenant": lambda rid: _json(rid, tenant=OTHER),
        "duplicate_id_other_content": lambda rid: _json(valid().request_id, inputs="not what was sent"),
        "lone_surrogates": lambda rid: _json(rid)[:-1] + b', "inputs": "\\ud800 and \\udfff alone"}',
        "binary_garbage": lambda rid: secrets.token_bytes(4_096),
        "nan_and_infinity": lambda rid: _json(rid)[:-1] + b', "top_k": NaN, "priority": Infinity}',
        "null_bytes": lambda rid: _json(rid, inputs="nul\x00byte\x00" * 100),
        "empty_value": lambda rid: b"",
        "unsigned": lambda rid: _json(rid),  # Kafka: no signature headers; HTTP: no API key
    }


@dataclass
class Sent:
    kind: str
    path: str  # kafka | http
    key: str
    request_id: str
    answer: str = "unanswered"


class IntakeKeeper:
    """Starts the intake again when it dies (as a supervisor would) and counts the restarts."""

    def __init__(self, stack: Stack, limit: int = 50) -> None:
        self.stack, self.limit = stack, limit
        self.pid = stack.pid("intake")
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="intake-keeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            pid = self.stack.pid("intake")
            if pid == self.pid:
                continue
            self.restarts += 1
            if pid is None and self.restarts <= self.limit:
                self.stack.up(only=["intake"])
            self.pid = self.stack.pid("intake")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def poison_settings(settings: Settings, state_dir: Path) -> tuple[Settings, bytes, str]:
    """The poison stack's settings (signed Kafka tenants, API keys), the tenant's key and API key."""
    key, other, api_key = secrets.token_bytes(32), secrets.token_bytes(32), new_key()
    ps = on_free_ports(settings, state_dir).model_copy(
        update={
            "log_ship": False,
            "kafka_tenant_auth": "signed",
            "kafka_tenant_keys": SecretStr(f"{TENANT}:{key.hex()},{OTHER}:{other.hex()}"),
            "api_keys": SecretStr(f"{TENANT}:{digest(api_key)}"),
            # the workers are up before the intake and the API: past this, an unserved model is
            # answered within the drill (the default grace outlasts a short drill)
            "unserved_model_grace_s": UNSERVED_GRACE_S,
        }
    )
    return ps, key, api_key


def run_poison(
    settings: Settings, requests: int, timeout_s: float, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    ps, key, api_key = poison_settings(settings, (settings.state_dir / "drill-poison").resolve())
    stack = Stack(ps)
    t0 = time.monotonic()
    try:
        stack.up(only=SERVICES)
        keeper = IntakeKeeper(stack)
        ledger = Ledger(ps)
        try:
            valid, sent = _traffic(ps, key, api_key, requests, progress)
            published = threading.Event()
            published.set()
            final = ledger.wait_terminal(lambda: list(valid), published, timeout_s)
            _answer(ps, ledger, sent)
        finally:
            ledger.close()
            keeper.close()
    finally:
        stack.down()
    lost = sorted(rid for rid, (st, _) in final.items() if st in (None, "queued", "running"))
    kinds: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for s in sent:
        kinds[s.kind][s.path][s.answer] += 1
    return {
        "requests": len(valid),
        "lost": len(lost),
        "lost_ids": lost[:10],
        "intake_restarts": keeper.restarts,
        "by_status": dict(Counter(st or "missing" for st, _ in final.values())),
        "hostile_sent": len(sent),
        "intake_crashes": crashes_in_log(stack.log_dir / "intake.log"),
        "kinds": {k: {path: dict(c) for path, c in v.items()} for k, v in sorted(kinds.items())},
        "ok": not lost and keeper.restarts == 0,
        "wall_s": round(time.monotonic() - t0, 1),
    }


def crashes_in_log(path: Path) -> dict[str, int]:
    """The exceptions that ended intake processes, by type and the start of their message, from
    the tracebacks in its log (what the drill's restarts were caused by)."""
    found: Counter[str] = Counter()
    in_trace = False
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if line.startswith("Traceback"):
            in_trace = True
        elif in_trace and not line.startswith((" ", "\t")) and ":" in line:
            found[line[:120]] += 1
            in_trace = False
    return dict(found)


def _traffic(
    ps: Settings, key: bytes, api_key: str, requests: int, progress: Callable[[int], None] | None
) -> tuple[list[str], list[Sent]]:
    """Publish the valid requests with the hostile records between them; returns the valid ids,
    scoped by their tenant (the ones acknowledged: by the broker, or 202 from the API) and the
    hostile records sent."""
    valid: list[str] = []
    sent: list[Sent] = []
    tag = f"poison-{secrets.token_hex(3)}"
    kinds = hostile_kinds(lambda: last[0])
    every = max(1, requests // (ROUNDS * len(kinds)))
    order = [k for _ in range(ROUNDS) for k in kinds]
    raw = KafkaProducer(**kafka_options(ps), acks="all", max_request_size=4 * 1024 * 1024, retries=3)
    api = http.client.HTTPConnection(ps.api_host, ps.api_port, timeout=30)
    last: list[InferenceRequest] = []
    with InferqClient(ps, tenant=TENANT, tenant_key=key) as client:
        for i in range(requests):
            req = drill_request(tag, i).model_copy(update={"tenant": TENANT})
            if i % HTTP_SHARE == 0:
                status, _ = _post(api, api_key, req.wire_json().encode())
                if status == 202:
                    valid.append(scoped_id(TENANT, req.request_id))
                    last[:] = [req]  # admitted before the answer: a reuse of its id is a conflict at once
            else:
                client.publish(req).get(timeout=30)
                valid.append(scoped_id(TENANT, req.request_id))
            if i % every == every - 1 and order:
                kind = order.pop(0)
                sent.append(_kafka_hostile(raw, ps, key, kind, kinds[kind]))
                sent.append(_http_hostile(api, api_key, kind, kinds[kind]))
            if progress is not None:
                progress(i + 1)
        client.flush()
    raw.flush()
    raw.close()
    api.close()
    return valid, sent


def _kafka_hostile(
    raw: KafkaProducer, ps: Settings, key: bytes, kind: str, make: Callable[[str], bytes | None]
) -> Sent:
    rid = f"poison{secrets.token_hex(10)}"
    value = make(rid)
    rkey = f"{kind}-{rid}"
    # signed (but the unsigned kind): every other kind reaches the checks past the tenant
    headers = None if kind == UNSIGNED else signed_headers(TENANT, key, value or b"")
    try:
        raw.send(requests_topic(ps), key=rkey.encode(), value=value, headers=headers).get(timeout=30)
        return Sent(kind, "kafka", rkey, rid)
    except Exception as e:  # the broker refused it (e.g. over its size limit): answered at the door
        return Sent(kind, "kafka", rkey, rid, f"broker:{type(e).__name__}")


def _http_hostile(
    api: http.client.HTTPConnection, api_key: str, kind: str, make: Callable[[str], bytes | None]
) -> Sent:
    rid = f"poison{secrets.token_hex(10)}"
    body = make(rid) or b""
    status, code = _post(api, "" if kind == UNSIGNED else api_key, body)
    return Sent(kind, "http", "", rid, f"http:{status}/{code}" if status else "http:error")


def _post(api: http.client.HTTPConnection, api_key: str, body: bytes) -> tuple[int, str]:
    """POST a body to /v1/requests; (status, error code or ''); (0, '') when the API did not answer."""
    try:
        api.request(
            "POST",
            "/v1/requests",
            body=body,
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {api_key}"} if api_key else {}),
            },
        )
        resp = api.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException):
        api.close()  # a new connection next time
        return 0, ""
    try:
        code = json.loads(data).get("error", {}).get("code", "") if resp.status >= 400 else ""
    except (ValueError, AttributeError):
        code = ""
    return resp.status, str(code)


def _answer(ps: Settings, ledger: Ledger, sent: list[Sent], timeout_s: float = 30.0) -> None:
    """Fill in how each hostile Kafka record was answered: its result, else its dead letter."""
    kafka = [s for s in sent if s.path == "kafka" and s.answer == "unanswered"]
    letters = _dead_letters(ps, {s.key for s in kafka}, timeout_s)
    results = ledger.store.get_many([s.request_id for s in kafka], TENANT)
    for s in kafka:
        result = results.get(s.request_id)
        if s.key in letters:
            s.answer = f"dead_letter:{letters[s.key]}"
        elif result is not None:
            code = result.error.code.value if result.error else ""
            s.answer = f"result:{result.status.value}/{code}"


def _dead_letters(ps: Settings, keys: set[str], timeout_s: float) -> dict[str, str]:
    """Record key → error code of the dead letters for those keys (read from the start)."""
    letters = read_dead_letters(ps, keys, by_record_key=True, timeout_s=timeout_s)
    return {name: letter.error.code.value for name, letter in letters.items() if name in keys}
