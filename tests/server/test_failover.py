"""Replicas, retries before the first byte, ejection and adapter affinity, on fake engines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fake_vllm import MODEL, FakeVLLM, fleet_transport
from tests.server.conftest import wait_ready

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


@pytest.fixture
def fleet() -> dict[str, FakeVLLM]:
    return {"a": FakeVLLM(), "b": FakeVLLM()}


@pytest.fixture
def client(settings: Settings, fleet: dict[str, FakeVLLM]) -> Iterator[TestClient]:
    two = settings.model_copy(
        update={"engine_urls": ["http://a:8000", "http://b:8000"], "health_interval_s": 0.2}
    )
    with TestClient(create_app(two, transport=fleet_transport(fleet))) as test_client:
        wait_ready(test_client)
        time.sleep(0.3)  # both replicas probed healthy
        yield test_client


def test_requests_spread_over_replicas(client: TestClient, fleet: dict[str, FakeVLLM]) -> None:
    for _ in range(10):
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert fleet["a"].requests and fleet["b"].requests


@pytest.mark.parametrize("stream", [False, True])
def test_unreachable_replica_fails_over(
    client: TestClient, fleet: dict[str, FakeVLLM], stream: bool
) -> None:
    fleet["a"].refuse_connections = True
    for _ in range(6):
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert response.status_code == 200
    assert len(fleet["b"].requests) == 6
    ready = client.get("/ready").json()
    assert ready["models"][MODEL] is True  # one healthy replica is enough


def test_busy_replica_is_retried_elsewhere(client: TestClient, fleet: dict[str, FakeVLLM]) -> None:
    fleet["a"].fail_status = 503
    for _ in range(4):
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert len(fleet["b"].requests) == 4


@pytest.mark.parametrize("status", [400, 404, 500])
def test_client_errors_are_never_retried(
    client: TestClient, fleet: dict[str, FakeVLLM], status: int
) -> None:
    for engine in fleet.values():
        engine.fail_status = status
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code in (400, 404, 502)
    assert len(fleet["a"].requests) + len(fleet["b"].requests) == 1


def test_all_replicas_down_is_a_bounded_503(client: TestClient, fleet: dict[str, FakeVLLM]) -> None:
    for engine in fleet.values():
        engine.refuse_connections = True
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert time.monotonic() - started < 3


def test_mid_stream_failure_is_not_retried(client: TestClient, fleet: dict[str, FakeVLLM]) -> None:
    for engine in fleet.values():
        engine.break_after = 2
    text = client.post("/v1/chat/completions", json={**CHAT, "stream": True}).text
    assert '"error"' in text
    assert len(fleet["a"].requests) + len(fleet["b"].requests) == 1  # never duplicated


def test_ejected_replica_comes_back(client: TestClient, fleet: dict[str, FakeVLLM]) -> None:
    fleet["a"].refuse_connections = True
    for _ in range(3):
        client.post("/v1/chat/completions", json=CHAT)
    fleet["a"].refuse_connections = False
    time.sleep(0.6)  # a health probe passes
    before = len(fleet["a"].requests)
    for _ in range(6):
        client.post("/v1/chat/completions", json=CHAT)
    assert len(fleet["a"].requests) > before


def test_adapter_affinity(
    client: TestClient, fleet: dict[str, FakeVLLM], adapter_root: Any, base_model_dir: Any
) -> None:
    from lorafleet.adapters.base_models import model_info
    from tests.adapter_factory import make_lora_dir

    path = make_lora_dir(adapter_root / "sticky", model_info(base_model_dir), layers=range(1))
    assert (
        client.post("/v1/adapters", json={"name": "sticky", "source": str(path)}).status_code == 201
    )
    for _ in range(8):
        chat = {**CHAT, "model": "sticky"}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
    loads = [len(engine.loads) for engine in fleet.values()]
    assert sorted(loads) == [0, 1]  # loaded once, on one replica, which then got the traffic
    metrics = client.get("/metrics").text
    assert 'lorafleet:routing_decisions_total{outcome="cold"} 1.0' in metrics
    assert 'lorafleet:routing_decisions_total{outcome="warm"} 7.0' in metrics


def test_the_context_check_counts_on_the_replica_that_answers(
    client: TestClient, fleet: dict[str, FakeVLLM], adapter_root: Any, base_model_dir: Any
) -> None:
    """The replica is chosen once: the token count for the context check runs where the
    request then goes (the one holding the adapter), not on a second, separate pick."""
    from lorafleet.adapters.base_models import model_info
    from tests.adapter_factory import make_lora_dir

    path = make_lora_dir(adapter_root / "sticky", model_info(base_model_dir), layers=range(1))
    assert (
        client.post("/v1/adapters", json={"name": "sticky", "source": str(path)}).status_code == 201
    )
    assert client.post("/v1/chat/completions", json={**CHAT, "model": "sticky"}).status_code == 200
    holder = next(engine for engine in fleet.values() if engine.loads)
    # Near the 2048-token window: the gateway counts the prompt before sending it.
    long = {"role": "user", "content": "word " * 60}
    near = {**CHAT, "model": "sticky", "messages": [long], "max_tokens": 1950}
    assert client.post("/v1/chat/completions", json=near).status_code == 200
    assert [engine.tokenized for engine in fleet.values()] == [
        1 if engine is holder else 0 for engine in fleet.values()
    ]
    assert len(holder.requests) == 2
