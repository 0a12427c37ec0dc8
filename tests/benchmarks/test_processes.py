"""Child processes: started in their own group, found ready, metered, and always stopped."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from lorafleet.benchmarks.processes import (
    ProcessSpec,
    ProcessStack,
    ProcessStartError,
    VllmOptions,
    descendant_commands,
    fake_engine,
    find_free_port,
    gateway_process,
    plain_vllm_process,
    serve_process,
    tree_cpu_seconds,
    vllm_engine,
)


def test_find_free_port_skips_busy_and_taken() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        busy.listen()
        taken: set[int] = set()
        found = find_free_port(port, port + 20, taken=taken)
        assert found != port and found in taken
        assert find_free_port(port, port + 20, taken=taken) not in (port, found)


def test_fake_engine_lifecycle(tmp_path: Path) -> None:
    with ProcessStack(tmp_path) as stack:
        process = stack.start(
            fake_engine(find_free_port(), ttft_ms=1, itl_ms=1, served_model_name="m")
        )
        stack.wait_ready()
        assert process.ready_after_s is not None and process.pid is not None
        pid = process.pid
        cpu = process.cpu_seconds()
        assert cpu is not None and cpu > 0
    assert (
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_process_that_exits_reports_its_log(tmp_path: Path) -> None:
    spec = ProcessSpec(
        "dies",
        [sys.executable, "-c", "print('bad flag'); raise SystemExit(3)"],
        port=find_free_port(),
        ready_path="/health",
    )
    with ProcessStack(tmp_path) as stack:
        stack.start(spec)
        with pytest.raises(ProcessStartError, match=r"exited with 3:\n.*bad flag"):
            stack.wait_ready()


def test_ready_timeout(tmp_path: Path) -> None:
    spec = ProcessSpec(
        "sleeps",
        [sys.executable, "-c", "import time; time.sleep(30)"],
        port=find_free_port(),
        ready_path="/health",
        ready_timeout_s=0.5,
    )
    with ProcessStack(tmp_path) as stack:
        stack.start(spec)
        with pytest.raises(ProcessStartError, match="not ready after"):
            stack.wait_ready()


def test_tree_cpu_seconds_counts_self() -> None:
    value = tree_cpu_seconds(os.getpid())
    assert value is not None and value > 0
    assert tree_cpu_seconds(2**22 + 12345) is None


def test_vllm_command_and_env() -> None:
    options = VllmOptions(
        enable_lora=True,
        max_loras=8,
        max_lora_rank=16,
        lora_modules=(("a", "/x/a"),),
        kv_cache_gib=2.0,
    )
    spec = vllm_engine(Path("/models/m"), 8300, options)
    argv = " ".join(spec.argv)
    assert "--enable-lora --max-loras=8 --max-lora-rank=16" in argv
    assert "--lora-modules a=/x/a" in argv
    assert "--host=127.0.0.1 --port=8300" in argv and "--dtype=float32" in argv
    assert (
        spec.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
        and spec.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    )
    assert "--enable-lora" not in " ".join(vllm_engine(Path("/m"), 8301, VllmOptions()).argv)


def test_gateway_command_is_cluster_mode() -> None:
    spec = gateway_process(["http://127.0.0.1:8300"], "base", 8301, adapter_roots=[Path("/tmp/a")])
    assert spec.argv[1:4] == ["-m", "lorafleet.cli", "serve"]
    assert "--engine" in spec.argv and spec.ready_path == "/ready"
    assert spec.env["LORAFLEET_ADAPTER_ROOTS"] == "/tmp/a"


def test_plain_vllm_is_the_product_engine_with_lora_and_plugins_off(tmp_path: Path) -> None:
    from dataclasses import replace

    from lorafleet.server.engine.local import engine_specs
    from lorafleet.server.settings import Settings

    model = tmp_path / "model"
    plain = plain_vllm_process(model, 8355, "smollm2-135m-instruct")
    (product,) = engine_specs(Settings(), {"smollm2-135m-instruct": model})
    same = replace(product.recipe, enable_lora=False, host="127.0.0.1", port=8355)
    assert plain.argv == same.command()  # the product's recipe, nothing else changed
    assert "--enable-lora" in product.recipe.command()
    assert not any(arg.startswith(("--enable-lora", "--max-loras")) for arg in plain.argv)
    assert plain.env["VLLM_PLUGINS"] == ""  # no lorafleet CPU LoRA ops: plain vLLM
    assert plain.env["VLLM_CPU_KVCACHE_SPACE"] == product.environment({})["VLLM_CPU_KVCACHE_SPACE"]


def test_serve_process_is_local_mode_with_its_own_ports_and_state(tmp_path: Path) -> None:
    spec = serve_process(8360, 8361, tmp_path, settings_env={"LORAFLEET_ENGINE_MAX_LORAS": "8"})
    assert spec.argv[1:] == ["-m", "lorafleet.cli", "serve", "--port", "8360"]  # no --engine
    assert spec.env["LORAFLEET_ENGINE_PORT_BASE"] == "8361"
    assert spec.env["LORAFLEET_ENGINE_MAX_LORAS"] == "8"
    assert str(tmp_path) in spec.env["LORAFLEET_DATABASE_URL"]


def test_descendant_commands_reads_children(tmp_path: Path) -> None:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "marker-arg"])
    try:
        commands = descendant_commands(os.getpid())
        assert any("marker-arg" in command for command in commands)
    finally:
        child.kill()
        child.wait()
