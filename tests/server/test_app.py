"""The gateway against a fake engine at the engine seam: routing, relaying, errors, operations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lorafleet.server.app import create_app
from tests.fake_vllm import MODEL, FakeVLLM
from tests.server.conftest import wait_ready

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def sse_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


def assert_openai_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code
    return dict(error)


def test_chat_completion_passes_through(client: TestClient, engine: FakeVLLM) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10})
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "The capital is Paris."
    assert body["usage"]["completion_tokens"] == 5
    assert engine.requests[-1]["model"] == MODEL
    assert engine.requests[-1]["max_tokens"] == 10


def test_completion_passes_through(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "Paris is"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "The capital is Paris."


def test_every_response_has_a_request_id(client: TestClient, engine: FakeVLLM) -> None:
    ok = client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "abc-123"})
    assert ok.headers["x-request-id"] == "abc-123"
    assert engine.headers[-1]["x-request-id"] == "abc-123"
    generated = client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
    bad = client.post("/v1/chat/completions", json={}, headers={"x-request-id": "bad id\x7f"})
    assert bad.headers["x-request-id"] != "bad id\x7f"


def test_unknown_fields_are_not_forwarded(client: TestClient, engine: FakeVLLM) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "future_field": 1, "top_k": 5})
    assert response.status_code == 200
    assert "future_field" not in engine.requests[-1]
    assert engine.requests[-1]["top_k"] == 5


@pytest.mark.parametrize("field", ["chat_template", "chat_template_kwargs", "prompt_embeds"])
def test_engine_internals_are_refused(client: TestClient, engine: FakeVLLM, field: str) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, field: "x"})
    assert_openai_error(response, 400)
    assert not engine.requests


def test_stream_without_usage_hides_the_usage_chunk(client: TestClient, engine: FakeVLLM) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == (
        "The capital is Paris."
    )
    # The gateway still asked the engine for usage, for its own metering.
    assert engine.requests[-1]["stream_options"] == {"include_usage": True}


def test_stream_with_usage_ends_with_one_usage_chunk(client: TestClient) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(client.post("/v1/chat/completions", json=body).text)
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 5


def test_stream_events_are_relayed_one_by_one(client: TestClient, engine: FakeVLLM) -> None:
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        pieces = list(response.iter_raw())
    # Each engine event arrives as its own chunk: nothing is buffered or coalesced.
    assert len(pieces) >= len(engine.tokens) + 1
    assert all(piece.endswith(b"\n\n") for piece in pieces)


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"])
def test_events_with_other_line_ends_cut_anywhere_are_relayed_whole(
    client: TestClient, engine: FakeVLLM, line_end: bytes
) -> None:
    engine.line_end, engine.piece_bytes = line_end, 7  # CR and LF of one line end apart, too
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = client.post("/v1/chat/completions", json=body)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "The capital is Paris."
    assert chunks[-1]["usage"]["completion_tokens"] == 5  # the usage chunk was found


def test_unknown_model_is_404_and_never_a_path(client: TestClient, engine: FakeVLLM) -> None:
    for model in ["nope", "../../etc/passwd", "/etc/passwd"]:
        response = client.post("/v1/chat/completions", json={**CHAT, "model": model})
        assert_openai_error(response, 404, "model_not_found")
    assert not engine.requests


def test_models_lists_the_base_model(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [card["id"] for card in body["data"]] == [MODEL]


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"n": 10**6}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"stop": ["x"] * 5000}, "stop"),
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}] * 10_000}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, None),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "not-a-type"}},
                }
            },
            None,
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, None),
    ],
)
def test_bad_parameters_are_400(
    client: TestClient, engine: FakeVLLM, patch: dict[str, Any], param: str | None
) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, **patch})
    status = 413 if "messages" in patch and len(patch["messages"]) > 100 else 400
    error = assert_openai_error(response, status)
    if param and status == 400:
        assert error["param"].startswith(param)
    assert not engine.requests


def test_completion_logprobs_cap(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "logprobs": 21})
    assert_openai_error(response, 400)


def test_malformed_bodies_are_400(client: TestClient, engine: FakeVLLM) -> None:
    headers = {"content-type": "application/json"}
    for content in [b"{bad", b"\xff\xfe\x00", b"[1, 2]", b""]:
        response = client.post("/v1/chat/completions", content=content, headers=headers)
        assert_openai_error(response, 400)
    response = client.post(
        "/v1/chat/completions", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert response.status_code in (400, 415)
    assert not engine.requests


def test_large_bodies_are_413(client: TestClient, engine: FakeVLLM) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 200_000}]}
    assert_openai_error(client.post("/v1/chat/completions", json=big), 413)

    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    chunked = client.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_openai_error(chunked, 413)
    assert not engine.requests


def test_engine_only_routes_are_not_exposed(client: TestClient) -> None:
    for path in [
        "/tokenize",
        "/detokenize",
        "/v1/load_lora_adapter",
        "/pause",
        "/collective_rpc",
        "/v1/unload_lora_adapter",
        "/start_profile",
        "/sleep",
    ]:
        assert_openai_error(client.post(path, json={}), 404)


def test_engine_context_error_is_translated(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4000})
    error = assert_openai_error(response, 400, "context_length_exceeded")
    assert "maximum context length is 2048" in error["message"]


@pytest.mark.parametrize(("status", "expected"), [(400, 400), (500, 502), (503, 503)])
def test_engine_errors_map_to_openai_statuses(
    client: TestClient, engine: FakeVLLM, status: int, expected: int
) -> None:
    engine.fail_status = status
    assert_openai_error(client.post("/v1/chat/completions", json=CHAT), expected)
    stream = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert_openai_error(stream, expected)


def test_unreachable_engine_is_503(
    client: TestClient, engine: FakeVLLM, engine_client: str
) -> None:
    if engine_client == "aiohttp":
        pytest.skip("a socket that accepted cannot refuse: tests/server/test_faults.py covers it")
    engine.refuse_connections = True
    response = client.post("/v1/chat/completions", json=CHAT)
    assert_openai_error(response, 503, "engine_unavailable")
    assert "retry-after" in response.headers


def test_error_mid_stream_is_a_final_sse_event(client: TestClient, engine: FakeVLLM) -> None:
    engine.break_after = 3
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert set(error) == {"message", "type", "param", "code"}


def test_ready_waits_for_the_engine(settings: Any) -> None:

    engine = FakeVLLM(healthy=False)
    with TestClient(create_app(settings, transport=engine.transport())) as client:
        response = client.get("/ready")
        assert response.status_code == 503
        assert client.get("/health").status_code == 200
        assert_openai_error(client.post("/v1/chat/completions", json=CHAT), 503)


def test_metrics_count_requests_and_tokens(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=CHAT)
    client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    text = client.get("/metrics").text
    assert f'lorafleet:requests_total{{model="{MODEL}",status="200"}} 2.0' in text
    assert 'lorafleet:requests_total{model="unknown",status="404"} 1.0' in text
    assert f'lorafleet:generation_tokens_total{{model="{MODEL}"}} 10.0' in text
    assert f'lorafleet:time_to_first_token_seconds_count{{model="{MODEL}"}} 1.0' in text
    assert "lorafleet:engine_ready" in text


def test_openapi_schema_states_the_caps(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    chat = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert chat["n"]["anyOf"][0]["maximum"] == 16
    assert chat["messages"]["maxItems"] == 2048


def test_engines_found_through_service_discovery(settings: Any, engine: FakeVLLM) -> None:

    discovered = settings.model_copy(
        update={
            "engine_urls": [],
            "engine_discovery": ["localhost:8000"],
            "discovery_interval_s": 0.05,
        }
    )
    with TestClient(create_app(discovered, transport=engine.transport())) as client:
        wait_ready(client)
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        ready = client.get("/ready").json()
        assert ready["models"] == {MODEL: True}


def test_response_format_schema_reaches_the_engine_under_its_name(
    client: TestClient, engine: FakeVLLM
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    assert client.post("/v1/chat/completions", json={**CHAT, "response_format": response_format})
    assert engine.requests[-1]["response_format"]["json_schema"]["schema"] == schema


def test_prompt_plus_max_tokens_past_the_window_is_400(
    client: TestClient, engine: FakeVLLM
) -> None:
    long = {"role": "user", "content": "word " * 1500}
    response = client.post(
        "/v1/chat/completions", json={**CHAT, "messages": [long], "max_tokens": 1000}
    )
    error = assert_openai_error(response, 400, "context_length_exceeded")
    assert "maximum context length is 2048" in error["message"]
    assert not engine.requests
    fits = client.post("/v1/chat/completions", json={**CHAT, "messages": [long], "max_tokens": 100})
    assert fits.status_code == 200
