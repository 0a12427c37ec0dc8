"""Process-level behaviour with real engines: draining on SIGTERM, two replicas and failover."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.conftest import MODEL, Server, free_port_run, start_server, wait_ready

pytestmark = pytest.mark.integration

BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me a long story."}],
    "max_tokens": 40,
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
}


def stream_events(
    url: str, body: dict[str, Any], first: threading.Event | None = None
) -> list[str]:
    events = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if first is not None:
                    first.set()
    return events


def kill_listener(port: int) -> None:
    pid = next(
        c.pid for c in psutil.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid
    )  # fmt: skip
    os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_sigterm_drains_streams_then_exits_0(gateway: Server, tmp_path: Path) -> None:
    assert gateway.engine_url
    server = start_server(
        ["--engine", gateway.engine_url, "--served-model-name", MODEL],
        tmp_path / "drain.log",
        {"LORAFLEET_DRAIN_TIMEOUT_S": "300"},  # generous: CI machines are slow and shared
    )
    wait_ready(server, timeout_s=60)
    body = {**BODY, "max_tokens": 24}
    results: list[list[str]] = []
    failures: list[Exception] = []
    started = [threading.Event() for _ in range(3)]

    def consume(first: threading.Event) -> None:
        try:
            results.append(stream_events(server.url, body, first))
        except Exception as exc:  # reported below, with the server's log
            failures.append(exc)
            first.set()

    threads = [threading.Thread(target=consume, args=(event,)) for event in started]
    for thread in threads:
        thread.start()
    for event in started:
        assert event.wait(300)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with httpx.Client(timeout=2) as client, pytest.raises(httpx.TransportError):
        client.get(f"{server.url}/ready")  # the listener is closed: nothing new gets in
    for thread in threads:
        thread.join(600)
    assert server.process.wait(60) == 0, server.log_tail()
    assert not failures, (failures, server.log_tail())
    assert len(results) == 3
    for events in results:
        assert events[-1] == "[DONE]"
        assert '"finish_reason":"length"' in events[-2]  # every stream ran to its end


def test_two_replicas_survive_the_loss_of_either(tmp_path: Path) -> None:
    engine_port = free_port_run(2)
    env = {
        "LORAFLEET_ENGINE_PORT_BASE": str(engine_port),
        "LORAFLEET_ENGINE_KV_CACHE_GIB": "1",
        "LORAFLEET_HEALTH_INTERVAL_S": "1",
        "LORAFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(tmp_path / "store"),
    }
    server = start_server(["--replicas", "2"], tmp_path / "replicas.log", env)
    try:
        wait_ready(server)
        engines = [f"http://127.0.0.1:{engine_port + i}" for i in range(2)]
        deadline = time.monotonic() + 600
        while not all(_healthy(url) for url in engines):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(2)
        time.sleep(2)  # the gateway's health loop sees both
        unary = {**BODY, "stream": False, "max_tokens": 4}
        with httpx.Client(timeout=300) as client:  # closed: no socket left for the GC to find
            for _ in range(6):
                assert (
                    client.post(f"{server.url}/v1/chat/completions", json=unary).status_code == 200
                )
            assert all(_served(url) > 0 for url in engines)  # least-outstanding spread the load

            for victim in (0, 1):
                survivor = engines[1 - victim]
                before = _served(survivor)
                kill_listener(engine_port + victim)
                failed = sum(
                    client.post(f"{server.url}/v1/chat/completions", json=unary).status_code != 200
                    for _ in range(6)
                )
                assert failed == 0, server.log_tail()
                assert _served(survivor) >= before + 6
                while not _healthy(engines[victim]):  # the supervisor restarts it
                    assert time.monotonic() < deadline + 600, server.log_tail()
                    time.sleep(2)
                time.sleep(2)
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log_tail()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _served(url: str) -> float:
    """Requests the engine finished, from vLLM's own Prometheus metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total{")
    )
