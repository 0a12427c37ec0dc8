"""Valid JSON that Python accepts but the gateway cannot carry: 400 (404 for a model name),
in OpenAI's envelope, counted in metrics, and never a 500 (which would also drop keep-alive)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from lorafleet.adapters.base_models import model_info
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM
from tests.fault_engine import serve_in_thread
from tests.server.conftest import wait_ready

ADMIN_KEY = "admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
HUGE = "123456789012345678901234567890"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def raw(value: Any) -> bytes:
    """JSON with non-ASCII escaped: lone surrogates become `\\udc80`, as a hostile client
    would send them."""
    return json.dumps(value, ensure_ascii=True).encode()


@pytest.fixture
def secured(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "admin_key": SecretStr(ADMIN_KEY),
            "key_secret": SecretStr("s" * 40),
            "allow_hf_sources": False,  # fuzzed sources must never reach the network
        }
    )


@pytest.fixture
def client(
    secured: Settings, engine: FakeVLLM, adapter_root: Path, base_model_dir: Path
) -> Iterator[TestClient]:
    with TestClient(
        create_app(secured, transport=engine.transport()), raise_server_exceptions=False
    ) as test_client:
        wait_ready(test_client)
        path = make_lora_dir(adapter_root / "alpha", model_info(base_model_dir), layers=range(1))
        response = test_client.post(
            "/v1/adapters", json={"name": "alpha", "source": str(path)}, headers=ADMIN
        )
        assert response.status_code == 201
        yield test_client


def _deep_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def huge(value: Any) -> bytes:
    """`value` as JSON with every "HUGE" string replaced by an integer past 64 bits."""
    return raw(value).replace(b'"HUGE"', HUGE.encode())


def nested(depth: int) -> bytes:
    return raw(chat(tool_choice="X")).replace(b'"X"', b"[" * depth + b"]" * depth)


def tool(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


HOSTILE_BODIES = {
    "surrogate in content": ("/v1/chat/completions", raw(chat(messages=[
        {"role": "user", "content": "\udc80"}]))),
    "surrogate in model": ("/v1/chat/completions", raw(chat(model="a\udc80"))),
    "surrogate in stop": ("/v1/chat/completions", raw(chat(stop=["\ud800"]))),
    "surrogate in prompt": ("/v1/completions", raw({"model": MODEL, "prompt": "x\udfff"})),
    "huge token id": ("/v1/completions", huge({"model": MODEL, "prompt": ["HUGE"]})),
    "huge float token id": ("/v1/completions", raw({"model": MODEL, "prompt": [1e30]})),
    "huge seed": ("/v1/chat/completions", huge(chat(seed="HUGE"))),
    "huge in tool_choice": ("/v1/chat/completions", huge(chat(tool_choice={"x": "HUGE"}))),
    "huge in tool schema": ("/v1/chat/completions", huge(chat(tools=[tool(
        {"type": "integer", "maximum": "HUGE"})]))),
    "nested 300 deep": ("/v1/chat/completions", nested(300)),
    "nested 5000 deep": ("/v1/chat/completions", nested(5000)),
    "schema 200 deep": ("/v1/chat/completions", raw(chat(tools=[tool(_deep_schema(200))]))),
    "key rpm past 64 bits": ("/v1/keys", huge({"tenant": "t", "rpm": "HUGE"})),
    "key rpm as big float": ("/v1/keys", raw({"tenant": "t", "rpm": 1e30})),
    "rollback version past 64 bits": ("/v1/adapters/alpha/rollback", huge({"version": "HUGE"})),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE_BODIES))
def test_hostile_json_is_a_400_in_openai_shape(client: TestClient, case: str) -> None:
    path, body = HOSTILE_BODIES[case]
    response = client.post(path, content=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["alpha@²", "alpha@\u0661", "alpha@" + "9" * 20, "nope@²"])
def test_non_ascii_or_huge_versions_are_unknown_models(client: TestClient, model: str) -> None:
    response = client.post("/v1/chat/completions", json=chat(model=model), headers=ADMIN)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found"
    assert client.post("/v1/chat/completions", json=chat(model="alpha@1"), headers=ADMIN).is_success


@pytest.mark.parametrize("ref", ["alpha@²", "alpha@99999999999999999999"])
def test_removing_a_non_ascii_or_huge_version_is_a_400(client: TestClient, ref: str) -> None:
    response = client.delete(f"/v1/adapters/{ref}", headers=ADMIN)
    assert response.status_code == 400, response.text
    assert client.get("/v1/adapters/alpha", headers=ADMIN).status_code == 200


def test_hostile_requests_are_counted_as_400s(client: TestClient) -> None:
    for case in ("surrogate in content", "huge token id", "nested 5000 deep"):
        path, body = HOSTILE_BODIES[case]
        assert client.post(path, content=body, headers=ADMIN).status_code == 400
    page = client.get("/metrics", headers=ADMIN).text
    assert 'lorafleet:requests_total{model="unknown",status="400"} 3.0' in page
    assert 'status="500"' not in page


def test_hostile_request_keeps_the_connection_alive(secured: Settings, engine: FakeVLLM) -> None:
    with serve_in_thread(create_app(secured, transport=engine.transport())) as url:
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        try:
            for case in ("surrogate in model", "huge in tool_choice"):
                conn.request("POST", HOSTILE_BODIES[case][0], HOSTILE_BODIES[case][1], ADMIN)
                response = conn.getresponse()
                response.read()
                assert response.status == 400
                assert response.getheader("connection") != "close"
                sock = conn.sock
                conn.request("POST", "/v1/chat/completions", raw(chat(max_tokens=2)), ADMIN)
                ok = conn.getresponse()
                ok.read()
                assert ok.status == 200
                assert conn.sock is sock  # the same connection served both
        finally:
            conn.close()


# --- property: arbitrary JSON in any field of any route with a body: never a 5xx ---------------
# Hostile leaves are drawn as often as ordinary ones: a body must pass validation everywhere
# else for a bad leaf to reach the code that used to crash.
HOSTILE = (
    st.sampled_from(["\udc80", "\ud800", "a\udfffb", "²", "alpha@²"])
    | st.integers(min_value=2**63 - 2, max_value=2**80)
    | st.integers(max_value=-(2**63) - 1, min_value=-(2**80))
    | st.just(1e30)
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    HOSTILE | SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ROUTES = {
    "/v1/chat/completions": (chat(max_tokens=2), [
        "model", "messages", "max_tokens", "max_completion_tokens", "n", "stop", "seed", "tools",
        "tool_choice", "response_format", "logit_bias", "stream", "stream_options", "user",
        "temperature", "top_k", "logprobs", "top_logprobs", "unknown_field"]),
    "/v1/completions": ({"model": MODEL, "prompt": "hi", "max_tokens": 2}, [
        "model", "prompt", "max_tokens", "n", "echo", "logprobs", "suffix", "stop", "seed",
        "stream", "best_of", "min_tokens"]),
    "/v1/keys": ({"tenant": "t"}, ["tenant", "adapters", "rpm", "tpm", "budget_tokens"]),
    "/v1/adapters": ({"name": "beta", "source": "/nowhere"}, ["name", "source", "base_model"]),
    "/v1/adapters/alpha/rollback": ({}, ["version"]),
}  # fmt: skip


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(sorted(ROUTES)))
    base, fields = ROUTES[path]
    body = dict(base)
    for name in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=2, unique=True)):
        body[name] = draw(JSON_VALUES)
    if path == "/v1/chat/completions" and draw(st.booleans()):  # inside a message, too
        body["messages"] = [{"role": "user", "content": draw(JSON_VALUES)}]
    return path, json.dumps(body, ensure_ascii=True).encode()


def test_arbitrary_json_in_any_field_never_gets_a_5xx(client: TestClient) -> None:
    @given(request=hostile_requests())
    @hypothesis_settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(request: tuple[str, bytes]) -> None:
        path, body = request
        response = client.post(path, content=body, headers=ADMIN)
        where = f"{path} {body[:300]!r}: {response.text[:300]}"
        assert response.status_code < 500, where
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}, where

    check()
