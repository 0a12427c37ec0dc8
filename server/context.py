"""What the gateway knows about the request being served, for its log lines and traces.

`RequestIdMiddleware` opens one `RequestContext` per HTTP request and puts it in a contextvar;
the serving path fills it in as it learns things (the resolved adapter version, the replica,
the tenant). The object is mutated, never replaced: Starlette streams a response body from a
child task, which sees the contextvar as it was when the task started, so only a shared object
lets what the relay learns (TTFT, tokens) reach the access line written at the end.

Log records read it through `logs.RequestContextFilter`; `vllm_http` reads `traceparent` from
it to forward the trace to the engine.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any


@dataclass
class RequestContext:
    request_id: str
    method: str = ""
    path: str = ""
    route: str | None = None
    model: str | None = None
    adapter: str | None = None  # the resolved version, `name@version`
    replica: str | None = None
    tenant: str | None = None
    key_id: str | None = None  # never the key itself
    status: int | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    retries: int = 0
    affinity: str | None = None  # "warm" (adapter already on the replica) or "cold"
    # W3C trace context sent to the engine: the client's own when tracing is off, else the
    # engine-call span's.
    traceparent: str | None = None
    tracestate: str | None = None

    def log_fields(self) -> dict[str, Any]:
        """What every log line of the request carries (unset fields left out)."""
        fields = {
            "request_id": self.request_id,
            "model": self.model,
            "adapter": self.adapter,
            "replica": self.replica,
            "tenant": self.tenant,
            "key_id": self.key_id,
        }
        return {name: value for name, value in fields.items() if value is not None}


_CURRENT: ContextVar[RequestContext | None] = ContextVar("lorafleet_request", default=None)


def current() -> RequestContext | None:
    return _CURRENT.get()


def begin(context: RequestContext) -> Token[RequestContext | None]:
    return _CURRENT.set(context)


def end(token: Token[RequestContext | None]) -> None:
    _CURRENT.reset(token)
