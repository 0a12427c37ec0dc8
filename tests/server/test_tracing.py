"""OpenTelemetry spans of a request, caught by the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lorafleet.adapters.base_models import model_info
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from lorafleet.server.tracing import Tracing
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM
from tests.otlp_receiver import Receiver
from tests.server.conftest import wait_ready

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(
    settings: Settings, engine: FakeVLLM, exporter: InMemorySpanExporter
) -> Iterator[TestClient]:
    app = create_app(settings, transport=engine.transport(), tracing=Tracing(exporter))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        exporter.clear()
        yield client


def tree(spans: tuple[ReadableSpan, ...], trace_id: int) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        assert span.context is not None
        if span.context.trace_id == trace_id:
            named.setdefault(span.name, []).append(span)
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_streamed_request_is_one_trace_continued_from_the_client_and_into_the_engine(
    traced: TestClient, engine: FakeVLLM, exporter: InMemorySpanExporter
) -> None:
    response = traced.post(
        "/v1/chat/completions", json={"model": MODEL, "stream": True, **CHAT},
        headers={"traceparent": CLIENT_PARENT},
    )  # fmt: skip
    assert response.status_code == 200
    spans = tree(exporter.get_finished_spans(), int(CLIENT_TRACE, 16))
    [root] = spans["POST /v1/chat/completions"]
    assert root.kind is SpanKind.SERVER
    assert parent_of(root) == int("b7ad6b7169203331", 16)  # the client's span
    assert root.attributes is not None and root.attributes["http.response.status_code"] == 200
    [resolve], [admission], [call] = spans["resolve"], spans["admission"], spans["engine.request"]
    assert {parent_of(s) for s in (resolve, admission, call)} == {span_id(root)}
    assert call.kind is SpanKind.CLIENT
    assert [event.name for event in call.events] == ["first_byte", "last_byte"]
    # The engine was asked under the engine call's span, in the client's trace.
    sent = engine.headers[-1]["traceparent"]
    assert sent == f"00-{CLIENT_TRACE}-{span_id(call):016x}-01"


def test_retries_and_adapter_loads_are_spans_of_their_own(
    settings: Settings, engine: FakeVLLM, exporter: InMemorySpanExporter,
    adapter_root: Path, base_model_dir: Path,
) -> None:  # fmt: skip
    source = make_lora_dir(adapter_root / "support", model_info(base_model_dir), layers=range(1))
    app = create_app(settings, transport=engine.transport(), tracing=Tracing(exporter))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        assert client.post("/v1/adapters", json={"name": "support", "source": str(source)})
        exporter.clear()
        engine.fail_status = 503
        failed = client.post("/v1/chat/completions", json={"model": "support", **CHAT})
    assert failed.status_code == 503
    spans = exporter.get_finished_spans()
    [root] = [span for span in spans if span.name == "POST /v1/chat/completions"]
    assert root.context is not None
    named = tree(spans, root.context.trace_id)
    calls = named["engine.request"]
    assert len(calls) == settings.retry_attempts
    assert all(call.status.status_code is StatusCode.ERROR for call in calls)
    assert [_attr(call, "lorafleet.attempt") for call in calls] == [1, 2, 3]
    [load] = named["adapter.load"]  # the first attempt loads, the retries find it loaded
    assert parent_of(load) == span_id(root) and _attr(load, "adapter") == "support@1"
    assert root.status.status_code is StatusCode.ERROR
    assert _attr(root, "lorafleet.retries") == settings.retry_attempts - 1
    assert {call.context.trace_id for call in calls if call.context} == {root.context.trace_id}
    # Each attempt told the engine its own span.
    sent = [headers["traceparent"].split("-")[2] for headers in engine.headers]
    assert sent == [f"{span_id(call):016x}" for call in calls]


def test_probes_make_no_spans(traced: TestClient, exporter: InMemorySpanExporter) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert traced.get(path).status_code == 200
    assert traced.get("/v1/models").status_code == 200
    assert [span.name for span in exporter.get_finished_spans()] == ["GET /v1/models"]


def test_tracing_is_off_unless_an_endpoint_is_set(client: TestClient, engine: FakeVLLM) -> None:
    assert client.post("/v1/chat/completions", json={"model": MODEL, **CHAT}).status_code == 200
    assert "traceparent" not in engine.headers[-1]  # no client trace, none made up
    assert not Tracing.otlp(None).enabled
    exporting = Tracing.otlp("http://127.0.0.1:4318")
    assert exporting.enabled
    exporting.shutdown()


def _attr(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(name)


def test_spans_reach_an_otlp_http_collector(settings: Settings, engine: FakeVLLM) -> None:
    """The exporter the setting turns on (batched OTLP/HTTP protobuf), end to end: the spans
    of the last request are flushed when the gateway stops."""
    receiver = Receiver()
    try:
        traced = settings.model_copy(update={"otlp_endpoint": receiver.url})
        with TestClient(create_app(traced, transport=engine.transport())) as client:
            wait_ready(client)
            response = client.post(
                "/v1/chat/completions", json={"model": MODEL, **CHAT},
                headers={"traceparent": CLIENT_PARENT},
            )  # fmt: skip
            assert response.status_code == 200
    finally:
        receiver.close()
    spans = receiver.in_trace(CLIENT_TRACE)
    assert {span.service for span in spans} == {"lorafleet-gateway"}
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {"POST /v1/chat/completions", "resolve", "admission", "engine.request"}
    assert by_name["POST /v1/chat/completions"].parent_span_id == "b7ad6b7169203331"
    call = by_name["engine.request"].span_id
    assert engine.headers[-1]["traceparent"] == f"00-{CLIENT_TRACE}-{call}-01"
