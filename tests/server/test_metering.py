"""Metering a client cannot dodge: aborted streams, worst-case reservations, order of checks,
budgets smaller than the context window, usage beyond a reservation (auth on, fake engine, both
engine clients: a hang-up is seen by the production aiohttp client over a real socket too)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lorafleet.server.settings import Settings
from tests.fake_vllm import MODEL, FakeVLLM
from tests.fault_engine import serve_in_thread
from tests.server.conftest import gateway_app, wait_ready

ADMIN = {"Authorization": "Bearer admin-key-0123456789abcdef"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def secured(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "admin_key": SecretStr("admin-key-0123456789abcdef"),
            "key_secret": SecretStr("k" * 40),
        }
    )


@pytest.fixture
def client(secured: Settings, engine: FakeVLLM, engine_client: str) -> Iterator[TestClient]:
    with (
        gateway_app(secured, engine, engine_client) as app,
        TestClient(app) as test_client,
    ):
        wait_ready(test_client)
        yield test_client


def key(client: Any, **limits: Any) -> dict[str, str]:
    created = client.post("/v1/keys", json={"tenant": "acme", **limits}, headers=ADMIN)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


def usage_of(client: Any) -> dict[str, int]:
    rows = client.get("/v1/usage?group_by=tenant", headers=ADMIN).json()["data"]
    row = next((r for r in rows if r["tenant"] == "acme"), None)
    return {"prompt": 0, "completion": 0} if row is None else {
        "prompt": row["prompt_tokens"], "completion": row["completion_tokens"]
    }  # fmt: skip


def test_aborted_streams_are_billed(
    secured: Settings, engine: FakeVLLM, engine_client: str
) -> None:
    engine.tokens = [f" t{i}" for i in range(40)]
    engine.event_gap_s = 0.05
    with (
        gateway_app(secured, engine, engine_client) as app,
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        wait_ready(http)  # type: ignore[arg-type]
        headers = key(http, budget_tokens=10_000)
        for _ in range(3):  # read a few events, then hang up
            body = {**CHAT, "stream": True, "max_tokens": 40}
            with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                events = 0
                for line in r.iter_lines():
                    events += line.startswith("data: ")
                    if events == 4:
                        break
        deadline = time.monotonic() + 5
        while usage_of(http)["completion"] < 3 * 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        billed = usage_of(http)
        # Every aborted stream pays its (estimated) prompt and what it was sent, not the 40
        # tokens it asked for: the engine stopped when the client left.
        assert 3 * 4 <= billed["completion"] < 3 * 40, billed
        assert billed["prompt"] >= 3
        after = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers=headers)
        left = int(after.headers["x-lorafleet-budget-remaining-tokens"])
        assert left == 10_000 - billed["prompt"] - billed["completion"] - (7 + 1)


def test_max_completion_tokens_is_reserved(client: TestClient) -> None:
    headers = key(client, budget_tokens=300)
    body = {**CHAT, "max_tokens": 1, "max_completion_tokens": 500}  # vLLM honours the latter
    response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "budget_exceeded"


def test_list_prompts_times_n_are_reserved(client: TestClient, engine: FakeVLLM) -> None:
    headers = key(client, budget_tokens=100)
    body = {"model": MODEL, "prompt": ["a", "b", "c"], "n": 4, "max_tokens": 10}  # 120 tokens
    response = client.post("/v1/completions", json=body, headers=headers)
    assert response.status_code == 429
    assert engine.requests == []


def test_limits_are_checked_before_tokenizing(client: TestClient, engine: FakeVLLM) -> None:
    headers = key(client, rpm=1)
    assert client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2}, headers=headers)
    long = {"role": "user", "content": "word " * 1000}  # near the context: would be counted
    body = {**CHAT, "messages": [long], "max_tokens": 1500}
    response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 429
    assert engine.tokenized == 0


def test_context_check_refunds_its_reservation(client: TestClient, engine: FakeVLLM) -> None:
    headers = key(client, budget_tokens=20_000)
    engine.tokens = ["x"] * 10
    long = {"role": "user", "content": "word " * 3000}
    body = {**CHAT, "messages": [long], "max_tokens": 1500}
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 400
    ok = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3}, headers=headers)
    assert ok.headers["x-lorafleet-budget-remaining-tokens"] == str(20_000 - (7 + 3))


def test_small_budget_serves_a_request_without_max_tokens(
    client: TestClient, engine: FakeVLLM
) -> None:
    headers = key(client, budget_tokens=1000)  # smaller than the 2048-token context
    response = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 200, response.text
    assert 1 <= engine.requests[-1]["max_tokens"] <= 1000  # the engine is capped too
    assert int(response.headers["x-lorafleet-budget-remaining-tokens"]) == 1000 - (7 + 5)


def test_usage_beyond_the_reservation_is_charged_to_the_tpm_bucket(
    client: TestClient, engine: FakeVLLM
) -> None:
    headers = key(client, tpm=1000)
    engine.prompt_tokens = 900  # the engine counts far more than the gateway estimated
    response = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5}, headers=headers)
    assert response.status_code == 200
    assert int(response.headers["x-ratelimit-remaining-tokens"]) <= 1000 - 905


def test_a_client_gone_before_the_stream_starts_leaks_no_reservation(
    secured: Settings, engine: FakeVLLM, engine_client: str
) -> None:
    with (
        gateway_app(secured, engine, engine_client) as app,
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        wait_ready(http)  # type: ignore[arg-type]
        headers = key(http, budget_tokens=10_000)
        engine.stall_s = 0.5  # no first byte for half a second...
        body = {**CHAT, "stream": True, "max_tokens": 5}
        with pytest.raises(httpx.ReadTimeout):  # ...and the client gives up before it
            http.post("/v1/chat/completions", json=body, headers=headers, timeout=0.1)
        time.sleep(1.0)
        engine.stall_s = 0.0
        after = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers=headers)
        billed = usage_of(http)
        left = int(after.headers["x-lorafleet-budget-remaining-tokens"])
        assert left == 10_000 - billed["prompt"] - billed["completion"]  # nothing still reserved
