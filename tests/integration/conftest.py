"""A real gateway + vLLM engine on the default model, started once per test session.

Like TGI's launcher fixture: start `lorafleet serve` as a subprocess on free loopback ports,
wait for `/ready`, and print the server's log if it never gets there or when a test fails.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from lorafleet.server.engine.ports import port_in_use

MODEL = "smollm2-135m-instruct"
STARTUP_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port_run(count: int) -> int:
    """The first of `count` consecutive ports nothing holds now, for LORAFLEET_ENGINE_PORT_BASE
    where a test must know its engines' ports. Drawn below the kernel's ephemeral range: a base
    from `free_port()` lies inside it, where base + 1 can be the local end of any client
    connection on the machine (one CI run lost a fixture that way)."""
    low = _ephemeral_range()[0]
    for _ in range(200):
        base = random.randrange(20000, low - count)
        if not any(port_in_use("127.0.0.1", port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports below {low}")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    engine_url: str | None = None
    adapter_root: Path | None = None
    # Every SDK client handed out, closed by stop(): an unclosed one leaves a socket for the
    # garbage collector, which pytest (warnings are errors) reports at exit.
    clients: list[OpenAI] = field(default_factory=list)

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def openai(self, **kwargs: object) -> OpenAI:
        client = OpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0, **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "lorafleet.cli", "serve", "--port", str(port), *args]
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    return Server(process, f"http://127.0.0.1:{port}", log_path)


def wait_ready(server: Server, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    pytest.fail(f"server not ready after {timeout_s}s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`lorafleet serve` in local mode: it starts and supervises its own vLLM engine."""
    engine_port = free_port_run(1)
    state = tmp_path_factory.mktemp("gateway")
    adapter_root = tmp_path_factory.getbasetemp() / "adapter-sources"
    adapter_root.mkdir(exist_ok=True)
    env = {
        "LORAFLEET_ENGINE_PORT_BASE": str(engine_port),
        "LORAFLEET_ENGINE_KV_CACHE_GIB": "2",
        "LORAFLEET_LOG_LEVEL": "info",
        # A registry and store of its own: never the user's ~/.cache/lorafleet state.
        "LORAFLEET_DATABASE_URL": f"sqlite:///{state / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(state / "adapter-store"),
        "LORAFLEET_ADAPTER_ROOTS": str(adapter_root),
        "LORAFLEET_RECONCILE_INTERVAL_S": "2",
        # float32, not the machine's default: these tests compare greedy text across batch
        # compositions and against PEFT in float32. On a CPU with AVX-512 BF16 the default is
        # bfloat16, whose matrix products are not batch-invariant: 3 of 8 random adapters then
        # answered a mixed batch with other text than alone (from the 4th-8th token on, never
        # another model's text; docs/design/lora-throughput.md, "Mixed batches in bfloat16").
        # The other servers the integration tests start run at the machine's default.
        "LORAFLEET_ENGINE_DTYPE": "float32",
    }
    log_path = state / "serve.log"
    server = start_server([], log_path, env)
    server.engine_url = f"http://127.0.0.1:{engine_port}"
    server.adapter_root = adapter_root
    seconds = wait_ready(server)
    print(f"\n[gateway + engine ready in {seconds:.1f}s]")
    yield server
    server.stop()
    assert server.process.returncode == 0, server.log_tail()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and "gateway" in getattr(item, "funcargs", {}):
        report.sections.append(("gateway log", item.funcargs["gateway"].log_tail()))
