"""OpenTelemetry traces of gateway requests, exported over OTLP/HTTP when `otlp_endpoint` is set.

One span per HTTP request (`RequestIdMiddleware`), continuing the client's W3C `traceparent`
when it sent one; under it `resolve`, `admission` (context check, rate limits), `adapter.load`
(only when the adapter was not on the replica yet) and one `engine.request` per attempt, with
`first_byte` / `last_byte` events and error status on a failed attempt (a retry is a second
`engine.request`). Each `engine.request` hands its own `traceparent` to the engine, so vLLM's
spans (`--otlp-traces-endpoint`) hang under it in the same trace.

Off (the default) nothing of OpenTelemetry is even imported: every call is a no-op, and the
client's `traceparent` is still forwarded to the engine unchanged.

The tracer provider belongs to the app (no global provider is installed), so tests and several
apps in one process never share spans.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import Token
from typing import TYPE_CHECKING, Any

from lorafleet.server.context import RequestContext

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

# version-traceid-parentid-flags, lower-case hex (W3C Trace Context, level 1).
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def valid_traceparent(value: str | None) -> str | None:
    return value if value is not None and _TRACEPARENT.match(value) else None


class EngineCall:
    """The span of one attempt at the engine; a no-op when tracing is off."""

    def __init__(self, span: Span | None = None) -> None:
        self._span = span

    def first_byte(self) -> None:
        if self._span is not None:
            self._span.add_event("first_byte")

    def fail(self, exc: BaseException) -> None:
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, str(exc)))
            self._span.end()

    def end(self, status: int | None = None) -> None:
        if self._span is not None:
            self._span.add_event("last_byte")
            if status is not None and status != 200:
                from opentelemetry.trace import Status, StatusCode

                self._span.set_status(Status(StatusCode.ERROR, f"status {status}"))
            self._span.end()


class RequestSpan:
    """The span of one HTTP request, current for everything the request does."""

    def __init__(self, span: Span, token: Token[Context]) -> None:
        self.span = span
        self._token = token

    def end(self, context: RequestContext) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        if context.route:
            span.update_name(f"{context.method} {context.route}")
            span.set_attribute("http.route", context.route)
        attributes = {
            "http.response.status_code": context.status,
            "lorafleet.request_id": context.request_id,
            "lorafleet.model": context.model,
            "lorafleet.adapter": context.adapter,
            "lorafleet.replica": context.replica,
            "lorafleet.tenant": context.tenant,
            "lorafleet.retries": context.retries,
        }
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if context.status is not None and context.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(self._token)


class Tracing:
    """`Tracing()` is off. `Tracing.otlp(endpoint)` exports to a collector; tests pass an
    `exporter` (the SDK's in-memory one), which is exported synchronously."""

    def __init__(self, exporter: SpanExporter | None = None, *, batch: bool = False) -> None:
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        if exporter is None:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "lorafleet-gateway"}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        self._provider = provider
        self._tracer = provider.get_tracer("lorafleet")

    @classmethod
    def otlp(cls, endpoint: str | None) -> Tracing:
        """Export to an OTLP/HTTP collector (`http://collector:4318`); None: off."""
        if not endpoint:
            return cls()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # a gateway installed without the extra
            raise RuntimeError(
                "otlp_endpoint is set but OpenTelemetry is not installed: pip install "
                "'lorafleet[otel]'"
            ) from exc

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        return cls(OTLPSpanExporter(endpoint=url), batch=True)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start_request(
        self, headers: Mapping[str, str], method: str, path: str
    ) -> RequestSpan | None:
        if self._tracer is None:
            return None
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent: Context = TraceContextTextMapPropagator().extract(headers)
        span = self._tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return RequestSpan(span, token)

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        """A child span of the current one (exceptions are recorded on it)."""
        if self._tracer is None:
            return nullcontext()
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def engine_call(self, replica: str, attempt: int, context: RequestContext | None) -> EngineCall:
        """Start the span of one attempt and point the engine's `traceparent` at it."""
        if self._tracer is None:
            return EngineCall()
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        span = self._tracer.start_span(
            "engine.request",
            kind=trace.SpanKind.CLIENT,
            attributes={"server.address": replica, "lorafleet.attempt": attempt},
        )
        if context is not None:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
            context.traceparent = carrier.get("traceparent")
            context.tracestate = carrier.get("tracestate")
        return EngineCall(span)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
