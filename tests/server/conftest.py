from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fake_vllm import MODEL, FakeVLLM, asgi_app
from tests.fault_engine import serve_in_thread

SMOL_CONFIG = {
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
    "num_hidden_layers": 30, "max_position_embeddings": 8192,
}  # fmt: skip


@pytest.fixture
def engine() -> FakeVLLM:
    return FakeVLLM()


def write_model_dir(path: Path, config: dict[str, object]) -> Path:
    """A base model directory with this config.json (validation reads nothing else)."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture
def base_model_dir(tmp_path: Path) -> Path:
    """SmolLM2's architecture."""
    return write_model_dir(tmp_path / "base-model", SMOL_CONFIG)


@pytest.fixture
def adapter_root(tmp_path: Path) -> Path:
    root = tmp_path / "adapters-src"
    root.mkdir()
    return root


@pytest.fixture
def settings(tmp_path: Path, base_model_dir: Path, adapter_root: Path) -> Settings:
    return Settings(
        engine_urls=["http://engine-0:8000"],
        served_model_name=MODEL,
        model=str(base_model_dir),
        health_interval_s=0.05,
        cache_dir=tmp_path / "cache",
        adapter_roots=[adapter_root],
        registry_poll_s=0.05,
        reconcile_interval_s=0.2,
        max_body_bytes=64 * 1024,
        retry_max_wait_s=0.01,
    )


@pytest.fixture(params=["httpx", "aiohttp"])
def engine_client(request: pytest.FixtureRequest) -> str:
    """Both engine clients under the same tests: httpx through the fake's in-process
    `MockTransport` (the cheap seam), and aiohttp, what production runs, over a real socket to
    the same fake. A test about one seam only pins it: `@pytest.mark.parametrize(
    "engine_client", ["httpx"])`."""
    return str(request.param)


@contextmanager
def gateway_app(settings: Settings, engine: FakeVLLM, engine_client: str) -> Iterator[FastAPI]:
    """The gateway in front of `engine`, reached through the engine client named."""
    if engine_client == "httpx":
        yield create_app(settings, transport=engine.transport())
        return
    with serve_in_thread(asgi_app(engine)) as url:
        real = settings.model_copy(update={"engine_urls": [url], "engine_http_client": "aiohttp"})
        yield create_app(real)


@pytest.fixture
def client(settings: Settings, engine: FakeVLLM, engine_client: str) -> Iterator[TestClient]:
    with (
        gateway_app(settings, engine, engine_client) as app,
        TestClient(app, raise_server_exceptions=False) as test_client,
    ):
        wait_ready(test_client)
        yield test_client


def wait_ready(client: TestClient, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError("gateway never became ready")
        time.sleep(0.01)
