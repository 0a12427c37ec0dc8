"""Request-scoped log lines: one request's lines gathered by its id, and its access line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lorafleet.adapters.base_models import model_info
from lorafleet.server.app import create_app
from lorafleet.server.logs import make_handler
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM
from tests.server.conftest import wait_ready

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
ENGINE = "http://engine-0:8000"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    """What the gateway's JSON handler writes, parsed line by line."""
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


def start(settings: Settings, engine: FakeVLLM, **update: Any) -> TestClient:
    app = create_app(settings.model_copy(update=update), transport=engine.transport())
    return TestClient(app, raise_server_exceptions=False)


def by_id(lines: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("request_id") == request_id]


def access(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "lorafleet.access"]


def test_one_requests_lines_are_gathered_by_its_id(
    settings: Settings, engine: FakeVLLM, adapter_root: Path, base_model_dir: Path,
    log_lines: Lines,
) -> None:  # fmt: skip
    source = make_lora_dir(adapter_root / "support", model_info(base_model_dir), layers=range(1))
    with start(settings, engine, access_log=True) as client:
        wait_ready(client)
        assert client.post("/v1/adapters", json={"name": "support", "source": str(source)})
        adapter = client.post(
            "/v1/chat/completions", json={"model": "support", **CHAT},
            headers={"x-request-id": "req-adapter"},
        )  # fmt: skip
        streamed = client.post(
            "/v1/chat/completions", json={"model": MODEL, "stream": True, **CHAT},
            headers={"x-request-id": "req-stream"},
        )  # fmt: skip
    assert adapter.status_code == 200 and streamed.status_code == 200
    lines = log_lines()
    assert all(ISO.match(line["ts"]) and line["level"] and line["logger"] for line in lines)

    mine = by_id(lines, "req-adapter")
    # The cold load ran in its own task and still says which request caused it.
    loaded = [line for line in mine if line["logger"] == "lorafleet.server.lora"]
    assert [line["msg"].split(" in ")[0] for line in loaded] == [f"loaded support@1 on {ENGINE}"]
    assert all(line["model"] == "support" and line["tenant"] == "admin" for line in mine)
    assert access(mine) == [mine[-1]]
    line = mine[-1]
    assert line["msg"].startswith("POST /v1/chat/completions status=200")
    assert (line["method"], line["route"], line["status"]) == ("POST", "/v1/chat/completions", 200)
    assert (line["adapter"], line["replica"], line["affinity"]) == ("support@1", ENGINE, "cold")
    assert (line["prompt_tokens"], line["completion_tokens"], line["retries"]) == (7, 3, 0)
    assert "ttft_ms" not in line and line["duration_ms"] > 0

    streamed_lines = by_id(lines, "req-stream")
    # Library loggers' lines carry the id too (here httpx's, for the call to the engine).
    assert any(line["logger"] == "httpx" and ENGINE in line["msg"] for line in streamed_lines)
    [stream_line] = access(streamed_lines)
    assert stream_line["model"] == MODEL and "adapter" not in stream_line
    assert 0 < stream_line["ttft_ms"] <= stream_line["duration_ms"]
    assert stream_line["completion_tokens"] == 3
    # Requests outside the inference routes get their access line too; probes and scrapes
    # (every few seconds from Kubernetes and Prometheus) only at debug.
    assert any(line["route"] == "/v1/adapters" and line["status"] == 201 for line in access(lines))
    assert not [line for line in access(lines) if line["route"] == "/ready"]


def test_failures_and_retries_carry_the_request_id_without_an_access_log(
    settings: Settings, engine: FakeVLLM, log_lines: Lines
) -> None:
    engine.fail_status = 503
    with start(settings, engine) as client:
        wait_ready(client)
        response = client.post(
            "/v1/chat/completions", json={"model": MODEL, **CHAT}, headers={"x-request-id": "r-1"}
        )
    assert response.status_code == 503
    lines = by_id(log_lines(), "r-1")
    assert not access(log_lines())  # LORAFLEET_ACCESS_LOG is off by default
    [failed] = [line for line in lines if line["msg"].startswith("request failed")]
    assert (failed["level"], failed["model"], failed["replica"]) == ("warning", MODEL, ENGINE)


def test_access_line_counts_retries_and_names_the_key_never_the_secret(
    settings: Settings, engine: FakeVLLM, log_lines: Lines
) -> None:
    admin = {"Authorization": "Bearer admin-key-0123456789abcdef"}
    secured = {
        "admin_key": SecretStr("admin-key-0123456789abcdef"),
        "key_secret": SecretStr("s" * 40),
    }
    with start(settings, engine, access_log=True, **secured) as client:
        wait_ready(client)
        created = client.post("/v1/keys", json={"tenant": "acme", "adapters": []}, headers=admin)
        key = created.json()
        engine.fail_status = 503
        failed = client.post(
            "/v1/chat/completions", json={"model": MODEL, **CHAT},
            headers={"Authorization": f"Bearer {key['key']}", "x-request-id": "tenant-req"},
        )  # fmt: skip
    assert failed.status_code == 503
    [line] = access(by_id(log_lines(), "tenant-req"))
    assert (line["tenant"], line["key_id"], line["status"]) == ("acme", key["key_id"], 503)
    assert line["retries"] == settings.retry_attempts - 1
    everything = "\n".join(json.dumps(line) for line in log_lines())
    assert key["key"] not in everything and "admin-key-0123456789abcdef" not in everything


def test_client_traceparent_reaches_the_engine_with_tracing_off(
    client: TestClient, engine: FakeVLLM
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    client.post(
        "/v1/chat/completions", json={"model": MODEL, **CHAT},
        headers={"traceparent": parent, "tracestate": "vendor=1"},
    )  # fmt: skip
    client.post(
        "/v1/chat/completions", json={"model": MODEL, **CHAT}, headers={"traceparent": "junk"}
    )
    assert engine.headers[0]["traceparent"] == parent
    assert engine.headers[0]["tracestate"] == "vendor=1"
    assert "traceparent" not in engine.headers[1]  # malformed: not forwarded
