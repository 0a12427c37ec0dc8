"""One trace through the gateway and a real vLLM engine, caught by an OTLP/HTTP receiver.

The test runs its own receiver (the OTLP/HTTP protobuf protocol, decoded with
opentelemetry-proto), points the gateway (`LORAFLEET_OTLP_ENDPOINT`) and vLLM
(`--otlp-traces-endpoint`, through `engine_extra_args`) at it, sends a request with a client
`traceparent`, and checks that the gateway's and vLLM's spans land in the client's trace, vLLM's
under the gateway's `engine.request` span.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.integration.conftest import MODEL, free_port, start_server, wait_ready

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str


class Receiver:
    """A minimal OTLP/HTTP trace collector: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    attributes = {a.key: a.value for a in resource_spans.resource.attributes}
                    service = attributes["service.name"].string_value
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            ids = (span.trace_id, span.span_id, span.parent_span_id)
                            received = ReceivedSpan(service, span.name, *(i.hex() for i in ids))
                            receiver.spans.append(received)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def in_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


def test_gateway_and_vllm_spans_share_the_clients_trace(receiver: Receiver, tmp_path: Path) -> None:
    engine_port = free_port()
    env = {
        "LORAFLEET_ENGINE_PORT_BASE": str(engine_port),
        "LORAFLEET_ENGINE_KV_CACHE_GIB": "2",
        "LORAFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(tmp_path / "adapter-store"),
        "LORAFLEET_OTLP_ENDPOINT": receiver.url,
        "LORAFLEET_ENGINE_EXTRA_ARGS": f"--otlp-traces-endpoint {receiver.url}/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",  # vLLM's default is gRPC
    }
    server = start_server([], tmp_path / "serve.log", env)
    try:
        wait_ready(server)
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 30  # both export in batches every few seconds
        while time.monotonic() < deadline:
            services = {span.service for span in receiver.in_trace(TRACE_ID)}
            if "lorafleet-gateway" in services and len(services) > 1:
                break
            time.sleep(0.5)
        spans = receiver.in_trace(TRACE_ID)
        gateway = [span for span in spans if span.service == "lorafleet-gateway"]
        engine = [span for span in spans if span.service != "lorafleet-gateway"]
        assert gateway and engine, (spans, server.log_tail())
        [root] = [span for span in gateway if span.name == "POST /v1/chat/completions"]
        assert root.parent_span_id == CLIENT_SPAN
        calls = {span.span_id for span in gateway if span.name == "engine.request"}
        assert calls and any(span.parent_span_id in calls for span in engine), spans
    finally:
        server.stop()
