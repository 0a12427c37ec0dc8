"""Background loops that survive faults, stalled streams that end, adapters that stay loaded
while a request needs them (fake engine, faults injected)."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lorafleet.adapters.base_models import model_info
from lorafleet.server import app as app_module
from lorafleet.server.app import create_app
from lorafleet.server.engine.pool import EnginePool
from lorafleet.server.lora import AdapterManager
from lorafleet.server.settings import Settings
from lorafleet.server.usage import UsageMeter
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM
from tests.server.conftest import wait_ready

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def flaky(real: Callable[..., Any], failures: int, calls: list[int]) -> Callable[..., Any]:
    """`real`, except that its first `failures` calls raise."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= failures:
            raise RuntimeError("injected fault")
        return await real(*args, **kwargs)

    return call


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_health_loop_survives_a_failing_check(
    settings: Settings, engine: FakeVLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(EnginePool, "check_health", flaky(EnginePool.check_health, 2, calls))
    with TestClient(create_app(settings, transport=engine.transport())) as client:
        wait_ready(client)  # only a health check that ran after the faults makes it ready
    assert len(calls) > 2


def test_registry_watch_survives_a_failing_refresh(
    settings: Settings,
    engine: FakeVLLM,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = AdapterManager.refresh
    polls: list[int] = []

    async def refresh(self: AdapterManager, force: bool = False) -> bool:
        if not force:  # the watch loop's polls; start-up and the API force a refresh
            polls.append(1)
            if len(polls) <= 2:
                raise RuntimeError("injected fault")
        return await real(self, force)

    monkeypatch.setattr(AdapterManager, "refresh", refresh)
    with (
        caplog.at_level(logging.ERROR),
        TestClient(create_app(settings, transport=engine.transport())) as client,
    ):
        wait_ready(client)
        wait_for(lambda: len(polls) >= 5)
    assert "registry watch" in caplog.text and "injected fault" in caplog.text


def test_usage_flush_survives_a_failing_flush(
    settings: Settings, engine: FakeVLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = UsageMeter.flush

    def flush(self: UsageMeter) -> int:
        calls.append(1)
        if len(calls) <= 2:
            raise ValueError("injected fault")
        return real(self)

    monkeypatch.setattr(UsageMeter, "flush", flush)
    quick = settings.model_copy(update={"usage_flush_interval_s": 0.02})
    with TestClient(create_app(quick, transport=engine.transport())) as client:
        wait_ready(client)
        wait_for(lambda: len(calls) >= 5)


def test_discovery_survives_a_failing_round(
    settings: Settings, engine: FakeVLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    async def resolve(name: str) -> list[str] | None:
        return ["http://engine-0:8000"]

    monkeypatch.setattr(app_module, "_resolve", flaky(resolve, 2, calls))
    discovered = settings.model_copy(
        update={
            "engine_urls": [],
            "engine_discovery": ["engines.example:8000"],
            "discovery_interval_s": 0.02,
        }
    )
    with TestClient(create_app(discovered, transport=engine.transport())) as client:
        wait_ready(client)  # the pool is empty until a round after the faults


def test_a_stalled_stream_ends_after_the_inter_token_timeout(
    settings: Settings, engine: FakeVLLM
) -> None:
    engine.event_gap_s = 1.0
    impatient = settings.model_copy(update={"inter_token_timeout_s": 0.2})
    with TestClient(create_app(impatient, transport=engine.transport())) as client:
        wait_ready(client)
        started = time.monotonic()
        body = {"model": MODEL, "stream": True, **CHAT}
        response = client.post("/v1/chat/completions", json=body)
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert '"code":"engine_timeout"' in response.text, response.text
    assert response.text.endswith("data: [DONE]\n\n")
    assert elapsed < 2.5  # the first event (1 s), then 0.2 s of silence: not all 7 events


def test_an_adapter_is_not_evicted_between_resolve_and_relay(
    settings: Settings, engine: FakeVLLM, adapter_root: Path, base_model_dir: Path
) -> None:
    one_slot = settings.model_copy(update={"max_adapters_per_engine": 1})
    with TestClient(create_app(one_slot, transport=engine.transport())) as client:
        wait_ready(client)
        for name in ("alpha", "beta"):
            path = make_lora_dir(adapter_root / name, model_info(base_model_dir), layers=range(1))
            assert client.post("/v1/adapters", json={"name": name, "source": str(path)}).is_success
        assert client.post("/v1/chat/completions", json={"model": "alpha", **CHAT}).is_success
        engine.stall_s = 0.6  # alpha's stream waits for its first byte...
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            body = {"model": "alpha", "stream": True, **CHAT}
            stream = pool.submit(client.post, "/v1/chat/completions", json=body)
            time.sleep(0.2)  # ...while beta needs alpha's slot
            other = pool.submit(client.post, "/v1/chat/completions", json={"model": "beta", **CHAT})
            streamed, answered = stream.result(), other.result()
    assert answered.status_code == 200
    assert streamed.status_code == 200
    assert '"error"' not in streamed.text, streamed.text
    assert "Paris" in streamed.text


def test_the_gateway_removes_stale_store_temporaries_at_start(
    settings: Settings, engine: FakeVLLM
) -> None:
    stale = settings.store_dir / ".incoming-crashed"  # a registration killed mid-copy
    stale.mkdir(parents=True)
    (stale / "adapter_model.safetensors").write_bytes(b"half")
    then = time.time() - 2 * 3600
    os.utime(stale, (then, then))
    with TestClient(create_app(settings, transport=engine.transport())) as client:
        wait_ready(client)
    assert not stale.exists()
