from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fake_vllm import MODEL, FakeVLLM


@pytest.fixture
def engine() -> FakeVLLM:
    return FakeVLLM()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        engine_urls=["http://engine-0:8000"],
        served_model_name=MODEL,
        health_interval_s=0.05,
        cache_dir=tmp_path,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def client(settings: Settings, engine: FakeVLLM) -> Iterator[TestClient]:
    app = create_app(settings, transport=engine.transport())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        wait_ready(test_client)
        yield test_client


def wait_ready(client: TestClient, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError("gateway never became ready")
        time.sleep(0.01)
