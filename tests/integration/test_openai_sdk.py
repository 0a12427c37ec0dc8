"""The official OpenAI SDK against the real gateway and a real vLLM engine on CPU."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import MODEL, Server, start_server, wait_ready

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_answers_paris(gateway: Server) -> None:
    reply = gateway.openai().chat.completions.create(model=MODEL, messages=QUESTION, temperature=0)
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.model == MODEL
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_chat_with_default_sampling_answers_paris(gateway: Server) -> None:
    # No sampling parameters: the model card's defaults apply (the README sends temperature=0).
    # Sampled, this 135M model names Paris in about 3 answers of 5 (adapters/smoke_scores.json,
    # raw answers in benchmarks/results/2026-12-01-cpu/smoke/), so 2 of 3 failed about one run in
    # three. Of 8 sampled answers at least one names Paris unless the defaults broke the model
    # (0.4^8: one run in 4,000).
    reply = gateway.openai().chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=30, n=8
    )
    answers = [choice.message.content or "" for choice in reply.choices]
    assert len(answers) == 8
    assert any("Paris" in answer for answer in answers), answers


def test_text_completion(gateway: Server) -> None:
    reply = gateway.openai().completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert reply.choices[0].finish_reason == "length"


def test_stream_without_usage(gateway: Server) -> None:
    stream = gateway.openai().chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_with_usage(gateway: Server) -> None:
    stream = gateway.openai().chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        stream=True,
        max_tokens=6,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert sum(1 for c in chunks if c.usage is not None) == 1


def test_stream_arrives_one_token_per_event(gateway: Server) -> None:
    body = {"model": MODEL, "messages": QUESTION, "stream": True, "max_tokens": 8, "temperature": 0}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["x-request-id"]
        pieces = list(r.iter_raw())
    events = [p for p in pieces if p.startswith(b"data: {")]
    # Role chunk + 8 token chunks, each its own event, then [DONE].
    assert len(events) == 9
    assert pieces[-1] == b"data: [DONE]\n\n"


def test_n_choices(gateway: Server) -> None:
    reply = gateway.openai().chat.completions.create(
        model=MODEL, messages=QUESTION, n=3, max_tokens=5, seed=1
    )
    assert sorted(c.index for c in reply.choices) == [0, 1, 2]


def test_stop_sequence(gateway: Server) -> None:
    reply = gateway.openai().chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, stop=["Paris"]
    )
    assert "Paris" not in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"


def test_max_tokens_and_finish_reason(gateway: Server) -> None:
    reply = gateway.openai().chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=2
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 2


def test_logprobs(gateway: Server) -> None:
    reply = gateway.openai().chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=3, logprobs=True, top_logprobs=3
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 3
    assert all(len(token.top_logprobs) == 3 for token in content)


def test_response_format_json(gateway: Server) -> None:
    reply = gateway.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
        temperature=0,
        max_tokens=40,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "capital",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 20}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        },
    )
    parsed = json.loads(reply.choices[0].message.content or "")
    assert isinstance(parsed["city"], str)


def test_deterministic_at_temperature_zero(gateway: Server) -> None:
    client = gateway.openai()
    answers = {
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=20)
        .choices[0]
        .message.content
        for _ in range(3)
    }
    assert len(answers) == 1


def test_32_concurrent_streams(gateway: Server) -> None:
    client = gateway.openai(timeout=300)

    def one(i: int) -> tuple[int, str, int]:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Count to {i}."}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", 0
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return i, text, usage

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    assert [i for i, _, _ in results] == list(range(32))
    assert all(text and usage > 0 for _, text, usage in results)


@pytest.mark.parametrize(
    ("patch", "status"),
    [
        ({"n": 10**6}, 400),
        ({"max_tokens": 0}, 400),
        ({"max_tokens": -1}, 400),
        ({"max_tokens": 10**9}, 400),
        ({"max_tokens": 2040, "messages": [{"role": "user", "content": "hi " * 100}]}, 400),
        ({"messages": [{"role": "user", "content": "word " * 3000}]}, 400),
        ({"logprobs": True, "top_logprobs": 21}, 400),
        ({"stop": ["x"] * 5000}, 400),
        ({"messages": [{"role": "user", "content": "x" * 10_000_000}]}, 413),
        ({"messages": [{"role": "user", "content": "x"}] * 10_000}, 400),
        ({"model": "../../etc/passwd"}, 404),
    ],
)
def test_bad_input_is_a_fast_4xx(gateway: Server, patch: dict[str, Any], status: int) -> None:
    body = {"model": MODEL, "messages": QUESTION, **patch}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.elapsed.total_seconds() < 5
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    assert httpx.get(f"{gateway.url}/ready").status_code == 200


def test_context_length_is_reported_as_such(gateway: Server) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 3000}]
        )
    assert info.value.code == "context_length_exceeded"


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\xfd", b'"a string"', b"[]"])
def test_malformed_bodies(gateway: Server, content: bytes) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_maps_to_sdk_not_found(gateway: Server) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.openai().chat.completions.create(model="nope", messages=QUESTION)
    assert info.value.code == "model_not_found"


def test_engine_routes_are_not_exposed(gateway: Server) -> None:
    for path in ["/tokenize", "/v1/load_lora_adapter", "/pause", "/collective_rpc"]:
        assert httpx.post(f"{gateway.url}{path}", json={}).status_code == 404


def test_models_and_metrics(gateway: Server) -> None:
    models = gateway.openai().models.list()
    assert MODEL in [m.id for m in models.data]
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert "lorafleet:requests_total" in metrics
    assert "lorafleet:time_to_first_token_seconds_bucket" in metrics


def test_cluster_mode_serves_an_engine_started_elsewhere(gateway: Server, tmp_path: Any) -> None:
    assert gateway.engine_url
    second = start_server(
        ["--engine", gateway.engine_url, "--served-model-name", MODEL], tmp_path / "cluster.log"
    )
    try:
        wait_ready(second, timeout_s=60)
        reply = second.openai().chat.completions.create(
            model=MODEL, messages=QUESTION, temperature=0
        )
        assert "Paris" in (reply.choices[0].message.content or "")
    finally:
        second.stop()
    assert second.process.returncode == 0, second.log_tail()


def test_serve_rejects_bad_settings(tmp_path: Any) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lorafleet.cli",
            "serve",
            "--engine",
            "not a url",
            "--served-model-name",
            MODEL,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr
