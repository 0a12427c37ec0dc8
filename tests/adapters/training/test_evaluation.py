"""`lorafleet eval` against a fake OpenAI endpoint (httpx.MockTransport behind the real SDK)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from lorafleet.adapters.training.data import DatasetError
from lorafleet.adapters.training.evaluation import (
    EvalOptions,
    base_url,
    evaluate_async,
    load_items,
    render_markdown,
)
from lorafleet.adapters.training.synthetic import generate, write_jsonl


def fake_endpoint(answers: dict[str, str], seen: list[dict[str, Any]]) -> httpx.MockTransport:
    """Answers by user message; a user message it does not know gets a 500."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        user = body["messages"][-1]["content"]
        if user not in answers:
            return httpx.Response(
                500, json={"error": {"message": "engine died", "type": "server_error"}}
            )
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": answers[user]},
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            },
        )

    return httpx.MockTransport(handler)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "test.jsonl"
    write_jsonl(path, generate(4, "test", seed=0))
    return path


async def test_report_covers_every_example(dataset: Path) -> None:
    items = load_items(dataset)
    texts = [item.messages[-1]["content"] for item in items]
    answers = {
        texts[0]: json.dumps(items[0].gold),
        texts[1]: json.dumps(items[1].gold),
        texts[2]: "no idea",
    }
    seen: list[dict[str, Any]] = []
    client = AsyncOpenAI(
        base_url="http://gateway.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=fake_endpoint(answers, seen)),
    )
    options = EvalOptions(target="http://gateway.test", model="court", concurrency=2)
    report, raw = await evaluate_async(items, options, client=client)
    await client.close()

    assert {body["temperature"] for body in seen} == {0}
    assert {body["model"] for body in seen} == {"court"}
    assert [m["role"] for m in seen[0]["messages"]] == ["system", "user"]  # gold answer not sent
    assert report["examples"] == 4
    assert report["errors"] == 1 and "engine died" in report["error_samples"][0]
    assert raw[3].text is None and raw[3].error is not None
    assert report["json_valid_rate"] == 0.5
    assert report["fields"]["claim_amount"]["recall"] == 0.5
    assert report["tokens"]["completion_mean"] == 20.0
    assert report["latency_s"]["p50"] is not None

    table = render_markdown([report, {**report, "model": "smollm2-135m-instruct"}])
    assert table.splitlines()[0] == "| metric | `court` | `smollm2-135m-instruct` |"
    assert "| claim_amount F1 | 0.667 | 0.667 |" in table
    assert "| initiator accuracy |" in table


def test_base_url() -> None:
    assert base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"


def test_gold_answers_must_be_json_objects(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "q", "completion": "not json"}) + "\n")
    with pytest.raises(DatasetError, match="example 1: answer is not JSON"):
        load_items(path)
    path.write_text(json.dumps({"prompt": "q", "completion": "[1]"}) + "\n")
    with pytest.raises(DatasetError, match="not a JSON object"):
        load_items(path)


def test_limit(dataset: Path) -> None:
    assert len(load_items(dataset, limit=2)) == 2


async def test_response_format_is_sent_only_when_asked(dataset: Path) -> None:
    items = load_items(dataset, limit=1)
    answers = {items[0].messages[-1]["content"]: json.dumps(items[0].gold)}
    seen: list[dict[str, Any]] = []
    client = AsyncOpenAI(
        base_url="http://gateway.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=fake_endpoint(answers, seen)),
    )
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    for response_format in (None, schema):
        options = EvalOptions(target="http://gateway.test", model="m",
                              response_format=response_format)  # fmt: skip
        await evaluate_async(items, options, client=client)
    await client.close()
    assert "response_format" not in seen[0]
    assert seen[1]["response_format"] == schema
