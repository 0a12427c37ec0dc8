from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from lorafleet.server.engine.base import Endpoint
from lorafleet.server.engine.http import HttpxClient, Timeouts
from lorafleet.server.engine.vllm_http import VLLMHttpEngine
from lorafleet.server.errors import (
    AdapterNotSupportedError,
    ContextLengthExceededError,
    EngineTimeoutError,
    EngineUnavailableError,
    ModelNotFoundError,
)


def engine_with(handler: httpx.MockTransport) -> VLLMHttpEngine:
    return VLLMHttpEngine("http://engine", HttpxClient(Timeouts(5.0, 5.0), handler))


async def test_events_are_reassembled_whatever_the_chunking() -> None:
    async def body() -> AsyncIterator[bytes]:
        for piece in [b'data: {"a"', b": 1}\n", b'\ndata: {"b": 2}\n\ndata: [DO', b"NE]\n\n"]:
            yield piece

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body()))
    stream = await engine_with(transport).open_stream(Endpoint.CHAT, {"model": "m"}, "id")
    events = [event async for event in stream]
    assert events == [b'data: {"a": 1}\n\n', b'data: {"b": 2}\n\n', b"data: [DONE]\n\n"]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"error": {"message": "no", "type": "NotFoundError", "param": "model", "code": 404}},
         ModelNotFoundError),
        (400, {"error": {"message": "too long", "param": "input_tokens", "code": 400}},
         ContextLengthExceededError),
        (400, {"object": "error", "message": "max_tokens=9 cannot be greater than max_model_len",
               "param": "max_tokens"}, ContextLengthExceededError),
        (503, {"error": {"message": "busy"}}, EngineUnavailableError),
    ],
)  # fmt: skip
async def test_engine_errors_are_translated(status: int, body: object, error: type) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    with pytest.raises(error):
        await engine_with(transport).generate(Endpoint.CHAT, {"model": "m"}, "id")


async def test_transport_failures() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(EngineUnavailableError):
        await engine_with(httpx.MockTransport(refuse)).generate(Endpoint.CHAT, {}, "id")
    with pytest.raises(EngineTimeoutError):
        await engine_with(httpx.MockTransport(stall)).generate(Endpoint.CHAT, {}, "id")
    assert not await engine_with(httpx.MockTransport(refuse)).health()


async def test_an_engine_without_lora_refuses_adapters_before_asking_it() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(404)

    engine = VLLMHttpEngine(
        "http://engine", HttpxClient(Timeouts(5.0, 5.0), httpx.MockTransport(handler)), lora=False
    )
    with pytest.raises(AdapterNotSupportedError) as raised:
        await engine.load_adapter("court", "/store/court")
    assert raised.value.status == 400 and raised.value.code == "adapter_not_supported"
    assert "without LoRA" in raised.value.message and asked == []
