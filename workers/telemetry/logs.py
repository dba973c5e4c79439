"""Every process's logging: ECS JSON lines on stderr, and the same records shipped to Elasticsearch.

Call :func:`configure_logging` once at process start with the service's name. Context travels
in ``extra`` with dotted ECS names (``{"inferq.request_id": ...}``); the formatter nests them.
Input text is never logged unless ``INFERQ_LOG_INPUTS`` is on, and then only as
:func:`mask_text`'s preview.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import logging
import logging.handlers
import queue
import socket
import sys
import threading
from types import TracebackType
from typing import Any

import ecs_logging

from schemas.connections import elasticsearch_client
from schemas.naming import log_index, spool_dir
from schemas.settings import Settings
from workers.telemetry.events import REQUEST_DATASET, RESULTS_DATASET
from workers.telemetry.metrics import LOG_DROPPED
from workers.telemetry.shipper import Shipper

_shipper: Shipper | None = None
_listener: logging.handlers.QueueListener | None = None
crash_log = logging.getLogger("inferq.crash")
CRASH_DATASET = "inferq.crash"


class ShippingHandler(logging.Handler):
    """Formats each record as an ECS document and offers it to the shipper (never blocks)."""

    def __init__(self, shipper: Shipper, formatter: ecs_logging.StdlibFormatter) -> None:
        super().__init__()
        self.shipper = shipper
        self.ecs = formatter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.shipper.offer(de_dot(self.ecs.format_to_ecs(record)))
        except Exception:
            self.handleError(record)


def de_dot(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"log.level": x, "log": {"logger": y}}`` → ``{"log": {"level": x, "logger": y}}``."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            value = de_dot(value)
        parts = [key] if key.startswith("@") or "." not in key else key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return out


class DropTaskArguments(logging.Filter):
    """Celery logs a task's arguments (``data``) with each result; they hold request inputs.

    Also drops uvicorn's ``color_message`` (the message again, with terminal colours).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("celery") and hasattr(record, "data"):
            record.data = {k: v for k, v in record.data.items() if k not in ("args", "kwargs")}
        record.__dict__.pop("color_message", None)
        return True


class SkipDataset(logging.Filter):
    """Keeps a handler from writing one dataset's records: with shipping on, each request's record
    goes to Elasticsearch only (stderr has the per-write record naming the same requests), and the
    per-write record to stderr only (Elasticsearch has each request's own)."""

    def __init__(self, dataset: str) -> None:
        super().__init__()
        self.dataset = dataset

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "event.dataset", None) != self.dataset


class _Enqueue(logging.handlers.QueueHandler):
    """Hands records to the listener thread as they are: formatting happens there.

    The standard ``prepare`` formats the record and drops ``exc_info`` (so ECS ``error.*`` would be
    lost); here only the message is frozen, so later changes to the arguments cannot alter it.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg, record.args = record.getMessage(), None
        return record


def configure_logging(settings: Settings, service: str) -> Shipper | None:
    """Root logger → ECS JSON on stderr (+ Elasticsearch when ``log_ship``); returns the shipper.

    Callers only enqueue records (a few microseconds, on the engine thread too); one listener
    thread formats them (ECS JSON, twice) and writes/offers them, off every hot path.
    """
    global _shipper, _listener
    formatter = ecs_logging.StdlibFormatter(
        exclude_fields=["log.original"],
        extra={"service.name": service, "host.hostname": socket.gethostname()},
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if _listener is not None:
        _listener.stop()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    handlers: list[logging.Handler] = [stream]
    if settings.log_ship:
        if _shipper is None:
            _shipper = Shipper(
                elasticsearch_client(settings, request_timeout=10),
                log_index(settings),
                spool_dir(settings),
                queue_max_records=settings.log_queue_max_records,
                bulk_max_records=settings.log_bulk_max_records,
                flush_interval_ms=settings.log_flush_interval_ms,
                retry_max_s=settings.log_retry_max_s,
                spool_max_bytes=settings.log_spool_max_bytes,
                on_drop=lambda n: LOG_DROPPED.labels(service).inc(n),
            )
        shipping = ShippingHandler(_shipper, formatter)
        shipping.addFilter(SkipDataset(RESULTS_DATASET))
        handlers.append(shipping)
        if settings.log_level != "DEBUG":
            stream.addFilter(SkipDataset(REQUEST_DATASET))
    for h in handlers:
        h.addFilter(DropTaskArguments())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root.addHandler(_Enqueue(records))
    root.setLevel(settings.log_level)
    for noisy in ("kafka", "elastic_transport", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    _listener.start()
    atexit.register(stop_logging)
    _log_uncaught_exceptions()
    return _shipper


def log_crash(
    exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None, where: str
) -> None:
    """One ECS ``error`` record for an exception nothing caught (``error.type``, ``error.message``,
    ``error.stack_trace`` from ``exc_info``), so a crash is in Elasticsearch, not only a log file."""
    crash_log.error(
        "uncaught %s in %s: %s",
        exc_type.__name__,
        where,
        exc,
        exc_info=(exc_type, exc if exc is not None else exc_type(), tb),
        extra={
            "event.dataset": CRASH_DATASET,
            "event.action": "uncaught_exception",
            "event.outcome": "failure",
        },
    )


def _log_uncaught_exceptions() -> None:
    """Route uncaught exceptions (main thread and every other thread) through :func:`log_crash`.

    The record replaces Python's plain traceback on stderr (stderr carries the ECS lines, so the
    log file keeps one format); the process then exits as before, and the atexit hook ships the
    record. Ctrl-C keeps Python's own handling.
    """

    def main_hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        try:
            log_crash(exc_type, exc, tb, "the main thread")
        except Exception:  # logging itself is broken: at least the traceback reaches stderr
            sys.__excepthook__(exc_type, exc, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if issubclass(args.exc_type, SystemExit):  # a thread's sys.exit() is not a crash
            return
        name = args.thread.name if args.thread is not None else "a thread"
        try:
            log_crash(args.exc_type, args.exc_value, args.exc_traceback, f"thread {name}")
        except Exception:
            threading.__excepthook__(args)

    sys.excepthook = main_hook
    threading.excepthook = thread_hook


def stop_logging(timeout_s: float = 5.0) -> None:
    """Write out every queued record, then ship what the shipper holds (process exit)."""
    global _listener, _shipper
    if _listener is not None:
        _listener.stop()  # processes every record already queued
        _listener = None
    if _shipper is not None:
        _shipper.close(timeout_s)
        _shipper = None


def mask_text(text: str) -> str:
    """A preview that identifies an input without revealing it: 8 chars, length and digest."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    head = text[:8].replace("\n", " ")
    return f"{head}… ({len(text)} chars, sha256:{digest})"
