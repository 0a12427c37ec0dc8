"""The llama.cpp engine client against a stand-in of llama-server's HTTP API (the real server
runs in tests/integration/test_gguf_served.py)."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from lorafleet.server.engine.base import Endpoint
from lorafleet.server.engine.http import HttpxClient, Timeouts
from lorafleet.server.engine.kinds import engine_client
from lorafleet.server.engine.llamacpp_http import LlamaCppHttpEngine
from lorafleet.server.engine.vllm_http import VLLMHttpEngine
from lorafleet.server.errors import AdapterNotSupportedError
from lorafleet.server.settings import Settings

MESSAGES = [{"role": "user", "content": "hi"}]


def llama_server(request: httpx.Request) -> httpx.Response:
    """What llama-server answers on the routes the client uses (its JSON shapes)."""
    body = json.loads(request.content) if request.content else {}
    if request.url.path == "/apply-template":
        assert body == {"messages": MESSAGES}
        return httpx.Response(200, json={"prompt": "<|im_start|>user\nhi<|im_end|>\n"})
    if request.url.path == "/tokenize":
        assert body["add_special"] is True and body["parse_special"] is True
        return httpx.Response(200, json={"tokens": list(range(len(body["content"].split())))})
    if request.url.path == "/v1/models":
        return httpx.Response(200, json={"object": "list", "data": [{"id": "court-q8"}]})
    if request.url.path == "/props":
        return httpx.Response(200, json={"default_generation_settings": {"n_ctx": 4096}})
    return httpx.Response(404, json={"error": {"code": 404, "message": "File Not Found"}})


def engine() -> LlamaCppHttpEngine:
    transport = httpx.MockTransport(llama_server)
    return LlamaCppHttpEngine("http://engine", HttpxClient(Timeouts(5.0, 5.0), transport))


async def test_a_chat_is_counted_after_its_chat_template() -> None:
    body = {"model": "court-q8", "messages": MESSAGES}
    # the stand-in's tokenizer splits on white space: the rendered template has 2 pieces
    assert await engine().count_tokens(Endpoint.CHAT, body) == 2
    assert await engine().count_tokens(Endpoint.COMPLETIONS, {"prompt": "a b c d"}) == 4


async def test_model_cards_carry_the_servers_context_length() -> None:
    assert await engine().list_models() == [{"id": "court-q8", "max_model_len": 4096}]


async def test_loading_an_adapter_is_a_clear_400() -> None:
    with pytest.raises(AdapterNotSupportedError) as raised:
        await engine().load_adapter("court", "/store/court")
    assert raised.value.status == 400 and raised.value.code == "adapter_not_supported"
    assert "llama.cpp" in raised.value.message
    await engine().unload_adapter("court")  # nothing to unload: never an error


def test_the_kind_picks_the_client() -> None:
    client = HttpxClient(Timeouts(5.0, 5.0), httpx.MockTransport(llama_server))
    assert type(engine_client("llama.cpp", "http://e", client)) is LlamaCppHttpEngine
    assert type(engine_client("vllm", "http://e", client)) is VLLMHttpEngine


def test_llama_cpp_engines_are_cluster_mode_only() -> None:
    with pytest.raises(ValidationError, match="local mode starts vLLM engines only"):
        Settings(engine_kind="llama.cpp")
    remote = Settings(
        engine_kind="llama.cpp", engine_urls=["http://127.0.0.1:8080"], served_model_name="q8"
    )
    assert [spec.engine_kind for spec in remote.served_models] == ["llama.cpp"]
    with pytest.raises(ValidationError, match="give engine_kind per model"):
        Settings(engine_kind="llama.cpp", models=[{"name": "a", "engine_urls": ["http://e:1"]}])
