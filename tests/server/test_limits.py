"""Per-key limits and metering through the gateway (auth on, fake engine)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fake_vllm import MODEL, FakeVLLM
from tests.server.conftest import wait_ready

ADMIN = {"Authorization": "Bearer admin-key-0123456789abcdef"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
def client(settings: Settings, engine: FakeVLLM) -> Iterator[TestClient]:
    secured = settings.model_copy(
        update={
            "admin_key": SecretStr("admin-key-0123456789abcdef"),
            "key_secret": SecretStr("k" * 40),
            "max_in_flight_per_model": 4,
        }
    )
    with TestClient(create_app(secured, transport=engine.transport())) as test_client:
        wait_ready(test_client)
        yield test_client


def key(client: TestClient, **limits: Any) -> dict[str, str]:
    created = client.post("/v1/keys", json={"tenant": "acme", **limits}, headers=ADMIN).json()
    return {"Authorization": f"Bearer {created['key']}"}


def test_requests_per_minute(client: TestClient) -> None:
    headers = key(client, rpm=3)
    statuses = [client.post("/v1/chat/completions", json=CHAT, headers=headers) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[0].headers["x-ratelimit-limit-requests"] == "3"
    limited = statuses[-1]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.json()["error"]["type"] == "rate_limit_error"


def test_tokens_per_minute_reserve_then_settle(client: TestClient, engine: FakeVLLM) -> None:
    headers = key(client, tpm=60)
    big = {**CHAT, "max_tokens": 100}  # worst case over the whole minute's allowance
    small = {**CHAT, "max_tokens": 20}
    for _ in range(2):  # settled at the real usage (7 + 5 tokens), so both fit
        assert client.post("/v1/chat/completions", json=small, headers=headers).status_code == 200
    response = client.post("/v1/chat/completions", json=big, headers=headers)
    assert response.status_code == 429
    assert len(engine.requests) == 2


def test_budget_is_enforced_and_reported(client: TestClient) -> None:
    headers = key(client, budget_tokens=40)
    ok = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5}, headers=headers)
    assert ok.status_code == 200
    assert ok.headers["x-lorafleet-budget-remaining-tokens"] == str(40 - 12)
    refused = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 30}, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"


def test_usage_adds_up_to_what_clients_received(client: TestClient) -> None:
    headers = key(client)
    received = {"prompt": 0, "completion": 0}
    for stream in (False, True, False):
        body = {**CHAT, "stream": stream, "stream_options": {"include_usage": True}}
        if not stream:
            body.pop("stream_options")
        response = client.post("/v1/chat/completions", json=body, headers=headers)
        if stream:
            import json

            events = [e[6:] for e in response.text.split("\n\n") if e.startswith("data: {")]
            usage = json.loads(events[-1])["usage"]
        else:
            usage = response.json()["usage"]
        received["prompt"] += usage["prompt_tokens"]
        received["completion"] += usage["completion_tokens"]
    report = client.get("/v1/usage?group_by=tenant,model", headers=ADMIN).json()
    row = next(r for r in report["data"] if r["tenant"] == "acme")
    assert row["requests"] == 3
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        received["prompt"],
        received["completion"],
    )
    assert row["api_equivalent_usd"]["gpt-4o"] > 0
    assert client.get("/v1/usage?group_by=password", headers=ADMIN).status_code == 400
    assert client.get("/v1/usage", headers=headers).status_code == 403


def test_bounded_queue_answers_429(client: TestClient, engine: FakeVLLM) -> None:
    import concurrent.futures

    engine.stall_s = 0.5
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda _: client.post("/v1/chat/completions", json=CHAT, headers=ADMIN), range(8)
            )
        )
    codes = sorted(r.status_code for r in statuses)
    assert codes.count(200) >= 4 and 429 in codes
    assert all(r.json()["error"]["code"] == "queue_full" for r in statuses if r.status_code == 429)


def test_tenants_tokens_and_refusals_are_metrics(client: TestClient) -> None:
    headers = key(client, rpm=1)
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 429
    assert client.post("/v1/chat/completions", json=CHAT, headers=ADMIN).status_code == 200
    text = client.get("/metrics", headers=ADMIN).text
    assert 'lorafleet:tenant_tokens_total{kind="prompt",tenant="acme"} 7.0' in text
    assert 'lorafleet:tenant_tokens_total{kind="completion",tenant="acme"} 5.0' in text
    assert 'lorafleet:tenant_tokens_total{kind="completion",tenant="admin"} 5.0' in text
    assert 'lorafleet:tenant_refusals_total{code="rate_limit_exceeded",tenant="acme"} 1.0' in text
