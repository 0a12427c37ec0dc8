"""The naive Hugging Face baseline server, on a tiny random Llama (milliseconds per token)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from lorafleet.benchmarks.hf_server import BatchGenerator, Detokenizer, OpenAIFrontend


@pytest.fixture(scope="module")
def tiny(model_dir: Path) -> tuple[Any, Any]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval(), tokenizer


def app(tiny: tuple[Any, Any], batch_size: int) -> Any:
    model, tokenizer = tiny
    return OpenAIFrontend(
        BatchGenerator(model, tokenizer, batch_size, 0.3 if batch_size > 1 else 0.0),
        "tiny",
        tokenizer,
    ).app()


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(path, content=orjson.dumps(body))


def events(response: httpx.Response) -> list[Any]:
    lines = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    return [line if line == "[DONE]" else orjson.loads(line) for line in lines]


def test_streams_exactly_max_tokens_with_ignore_eos(tiny: tuple[Any, Any]) -> None:
    async def go() -> list[Any]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app(tiny, 1)), base_url="http://hf"
        ) as client:
            body = {
                "model": "tiny",
                "prompt": "hello there",
                "max_tokens": 6,
                "min_tokens": 6,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            return events(await post(client, "/v1/completions", body))

    stream = asyncio.run(go())
    tokens = [e for e in stream[:-1] if e["choices"]]
    assert len(tokens) == 6 and tokens[-1]["choices"][0]["finish_reason"] == "length"
    assert all(t["choices"][0]["finish_reason"] is None for t in tokens[:-1])
    assert stream[-2]["usage"]["completion_tokens"] == 6 and stream[-1] == "[DONE]"


def test_static_batch_serves_each_request_its_own_length(tiny: tuple[Any, Any]) -> None:
    async def go() -> list[list[Any]]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app(tiny, 4)), base_url="http://hf"
        ) as client:
            bodies = [
                {
                    "model": "tiny",
                    "prompt": "word " * (i + 1),
                    "max_tokens": n,
                    "ignore_eos": True,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                for i, n in enumerate((2, 7, 4))
            ]
            responses = await asyncio.gather(*(post(client, "/v1/completions", b) for b in bodies))
            return [events(r) for r in responses]

    for stream, expected in zip(asyncio.run(go()), (2, 7, 4), strict=True):
        assert len([e for e in stream[:-1] if e["choices"]]) == expected
        assert stream[-2]["usage"]["completion_tokens"] == expected


def test_chat_non_streaming_and_errors(tiny: tuple[Any, Any]) -> None:
    async def go() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app(tiny, 1)), base_url="http://hf"
        ) as client:
            chat = await post(
                client,
                "/v1/chat/completions",
                {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 3,
                    "ignore_eos": True,
                },
            )
            bad = await post(client, "/v1/completions", {"prompt": 5})
            models = await client.get("/v1/models")
            return chat, bad, models

    chat, bad, models = asyncio.run(go())
    body = chat.json()
    assert (
        body["choices"][0]["message"]["role"] == "assistant"
        and body["usage"]["completion_tokens"] == 3
    )
    assert bad.status_code == 400 and "prompt" in bad.json()["error"]["message"]
    assert models.json()["data"][0]["id"] == "tiny"


def test_detokenizer_is_incremental(tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    ids = tokenizer("Hello world, naïve café")["input_ids"]
    detok = Detokenizer(tokenizer)
    assert "".join(detok.add(t) for t in ids) == tokenizer.decode(ids, skip_special_tokens=True)
