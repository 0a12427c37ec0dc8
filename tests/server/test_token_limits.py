"""The default and the cap on generated tokens: the function, and the gateway using it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from lorafleet.server.app import create_app
from lorafleet.server.errors import InvalidRequestError
from lorafleet.server.settings import Settings
from lorafleet.server.token_limits import DEFAULT_MAX_TOKENS, apply_max_tokens
from tests.fake_vllm import MODEL, FakeVLLM
from tests.server.conftest import wait_ready

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital?"}]}
PROMPT = {"model": MODEL, "prompt": "The capital of France is"}
ADMIN = {"Authorization": "Bearer admin-key-0123456789abcdef"}


def test_the_default_fills_in_only_when_no_limit_is_named() -> None:
    bare: dict[str, Any] = {"model": MODEL}
    assert apply_max_tokens(bare, 256, None) is True
    assert bare["max_tokens"] == 256
    for named in ({"max_tokens": 1000}, {"max_completion_tokens": 7}):
        body = dict(named)
        assert apply_max_tokens(body, 256, None) is False
        assert body == named


def test_the_default_never_exceeds_the_cap() -> None:
    body: dict[str, Any] = {}
    apply_max_tokens(body, 256, 100)
    assert body["max_tokens"] == 100


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
def test_a_limit_above_the_cap_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        apply_max_tokens({name: 101}, 10, 100)
    assert caught.value.param == name
    assert apply_max_tokens({name: 100}, 10, 100) is False  # the cap itself is allowed


def test_settings_refuse_a_default_above_the_cap() -> None:
    with pytest.raises(ValidationError, match="default_max_tokens"):
        Settings(engine_urls=["http://e:8000"], served_model_name=MODEL, max_tokens_cap=100)


@pytest.fixture
def capped(settings: Settings) -> Settings:
    return settings.model_copy(update={"default_max_tokens": 3, "max_tokens_cap": 1000})


@pytest.fixture
def capped_client(capped: Settings, engine: FakeVLLM) -> Iterator[TestClient]:
    with TestClient(create_app(capped, transport=engine.transport())) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.mark.parametrize(
    ("path", "payload"), [("/v1/chat/completions", CHAT), ("/v1/completions", PROMPT)]
)
def test_the_engine_receives_the_default(
    capped_client: TestClient, engine: FakeVLLM, path: str, payload: dict[str, Any]
) -> None:
    response = capped_client.post(path, json=payload)
    assert response.status_code == 200, response.text
    assert engine.requests[-1]["max_tokens"] == 3
    assert response.json()["usage"]["completion_tokens"] == 3  # reported as usual
    assert response.json()["choices"][0]["finish_reason"] == "length"


def test_the_built_in_default_reaches_the_engine(client: TestClient, engine: FakeVLLM) -> None:
    streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200
    assert engine.requests[-1]["max_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
def test_an_explicit_limit_passes_untouched(
    capped_client: TestClient, engine: FakeVLLM, name: str
) -> None:
    response = capped_client.post("/v1/chat/completions", json={**CHAT, name: 5})
    assert response.status_code == 200, response.text
    assert engine.requests[-1][name] == 5
    other = "max_completion_tokens" if name == "max_tokens" else "max_tokens"
    assert other not in engine.requests[-1]


def test_above_the_cap_is_a_400_the_engine_never_sees(
    capped_client: TestClient, engine: FakeVLLM
) -> None:
    response = capped_client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1001})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "max_tokens"
    assert "1000" in error["message"]
    assert engine.requests == []


def test_a_long_prompt_without_max_tokens_is_not_refused_for_the_default(
    capped: Settings, engine: FakeVLLM
) -> None:
    """The context check refuses prompt + max_tokens over the window only for limits the
    client named; a default it never sent is left for the engine to shorten."""
    roomy = capped.model_copy(update={"default_max_tokens": 1000})
    long_prompt = {**PROMPT, "prompt": "word " * 1500}  # 1500 fake tokens + 1000 > 2048
    with TestClient(create_app(roomy, transport=engine.transport())) as test_client:
        wait_ready(test_client)
        assert test_client.post("/v1/completions", json=long_prompt).status_code == 200
        named = test_client.post("/v1/completions", json={**long_prompt, "max_tokens": 1000})
    assert named.status_code == 400
    assert named.json()["error"]["code"] == "context_length_exceeded"


def test_the_rate_limit_reserves_the_default_not_the_context(
    settings: Settings, engine: FakeVLLM
) -> None:
    """With 300 tokens a minute, a bare request fits when it reserves the 256-token default;
    reserving the whole 2048-token context would refuse it."""
    secured = settings.model_copy(
        update={
            "admin_key": SecretStr("admin-key-0123456789abcdef"),
            "key_secret": SecretStr("k" * 40),
        }
    )
    with TestClient(create_app(secured, transport=engine.transport())) as test_client:
        wait_ready(test_client)
        created = test_client.post("/v1/keys", json={"tenant": "acme", "tpm": 300}, headers=ADMIN)
        headers = {"Authorization": f"Bearer {created.json()['key']}"}
        response = test_client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 200, response.text
    assert engine.requests[-1]["max_tokens"] == DEFAULT_MAX_TOKENS
