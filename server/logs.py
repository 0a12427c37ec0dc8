"""Logging set-up: quiet, one line per event, JSON when asked (clusters), text otherwise.

Every line written while a request is served carries that request's id, model, adapter
version, replica and tenant/key id (`RequestContextFilter`, from `server.context`), so
`jq 'select(.request_id == "...")'` gathers one request's story. With `access_log` on, each
request also ends with one `lorafleet.access` line at info (`access_line`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

import orjson

from lorafleet.server.context import RequestContext, current

ACCESS_LOGGER = "lorafleet.access"
# Attributes `RequestContextFilter` may set on a record, in the order text lines show them.
_CONTEXT_FIELDS = ("request_id", "model", "adapter", "replica", "tenant", "key_id")
# Set by `access_line` through `extra=`; JSON lines show them as fields of their own.
_ACCESS_FIELDS = (
    "method", "route", "status", "ttft_ms", "duration_ms", "prompt_tokens",
    "completion_tokens", "retries", "affinity",
)  # fmt: skip
# Kubernetes probes and Prometheus scrapes arrive every few seconds: their access lines are
# debug, and they make no trace.
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})


class RequestContextFilter(logging.Filter):
    """Copies the current request's fields onto each record (a handler filter, so records from
    every logger, ours and the libraries', get them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current()
        if context is not None:
            for name, value in context.log_fields().items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in (*_CONTEXT_FIELDS, *_ACCESS_FIELDS):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request_id={request_id}]" if request_id else line


def make_handler(fmt: str, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestContextFilter())
    return handler


def configure_logging(level: str, fmt: str) -> None:
    root = logging.getLogger()
    root.handlers[:] = [make_handler(fmt)]
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless we debug. uvicorn's own access line is
    # replaced by ours (`access_line`), which knows the model, tokens and timings.
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel("DEBUG" if level == "debug" else "WARNING")


def access_line(context: RequestContext, duration_s: float) -> None:
    """One info line per request: what was asked, what came back, how long it took."""
    route = context.route or context.path
    ttft_ms = None if context.ttft_s is None else round(context.ttft_s * 1000, 2)
    fields = {
        "method": context.method,
        "route": route,
        "status": context.status,
        "ttft_ms": ttft_ms,
        "duration_ms": round(duration_s * 1000, 2),
        "prompt_tokens": context.prompt_tokens,
        "completion_tokens": context.completion_tokens,
        "retries": context.retries,
        "affinity": context.affinity,
    }
    shown = " ".join(
        f"{k}={v}" for k, v in fields.items() if v is not None and k not in ("method", "route")
    )
    level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
    logging.getLogger(ACCESS_LOGGER).log(
        level, "%s %s %s", context.method, route, shown, extra=fields
    )
