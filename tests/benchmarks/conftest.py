"""Shared fixtures: a fake OpenAI streaming server on a loopback port, in this process.

The fake (`lorafleet.benchmarks.fake_server`) streams with a set TTFT and token gap, so tests can
check that the load generator measures what the server did.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from lorafleet.benchmarks.fake_server import make_app

DEFAULT_MODEL_DIR = Path.home() / ".cache/lorafleet/models/smollm2-135m-instruct"


@dataclass(frozen=True)
class FakeServer:
    url: str
    ttft_s: float
    itl_s: float


def serve_in_thread(ttft_s: float, itl_s: float) -> tuple[uvicorn.Server, threading.Thread, str]:
    config = uvicorn.Config(
        make_app(ttft_s, itl_s, "fake-model"),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServer]:
    server, thread, url = serve_in_thread(ttft_s=0.05, itl_s=0.02)
    yield FakeServer(url, 0.05, 0.02)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not (DEFAULT_MODEL_DIR / "tokenizer.json").is_file():
        pytest.skip("default model not built (lorafleet model fetch)")
    return DEFAULT_MODEL_DIR
