"""One trace through the gateway and a real vLLM engine, caught by an OTLP/HTTP receiver.

The test runs its own receiver (tests/otlp_receiver.py), points the gateway
(`LORAFLEET_OTLP_ENDPOINT`) and vLLM (`--otlp-traces-endpoint`, from
`LORAFLEET_ENGINE_OTLP_TRACES_ENDPOINT`) at it, sends a request with a client `traceparent`,
and checks that the gateway's and vLLM's spans land in the client's trace, vLLM's under the
gateway's `engine.request` span.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import MODEL, free_port_run, start_server, wait_ready
from tests.otlp_receiver import Receiver

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_gateway_and_vllm_spans_share_the_clients_trace(receiver: Receiver, tmp_path: Path) -> None:
    engine_port = free_port_run(1)
    env = {
        "LORAFLEET_ENGINE_PORT_BASE": str(engine_port),
        "LORAFLEET_ENGINE_KV_CACHE_GIB": "2",
        "LORAFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(tmp_path / "adapter-store"),
        "LORAFLEET_OTLP_ENDPOINT": receiver.url,
        "LORAFLEET_ENGINE_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces",
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
        # Both export in batches every few seconds; the gateway's server span ends last (after
        # the response's last byte), so it may come a batch after its children.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            spans = receiver.in_trace(TRACE_ID)
            names = {span.name for span in spans if span.service == "lorafleet-gateway"}
            engine_spans = [span for span in spans if span.service != "lorafleet-gateway"]
            if "POST /v1/chat/completions" in names and engine_spans:
                break
            time.sleep(0.5)
        spans = receiver.in_trace(TRACE_ID)
        gateway = [span for span in spans if span.service == "lorafleet-gateway"]
        engine = [span for span in spans if span.service != "lorafleet-gateway"]
        assert gateway and engine, (spans, server.log_tail())
        roots = [span for span in gateway if span.name == "POST /v1/chat/completions"]
        assert len(roots) == 1, spans
        root = roots[0]
        assert root.parent_span_id == CLIENT_SPAN
        calls = {span.span_id for span in gateway if span.name == "engine.request"}
        assert calls and any(span.parent_span_id in calls for span in engine), spans
    finally:
        server.stop()
