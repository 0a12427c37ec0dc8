from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lorafleet.server.engine import local, supervisor
from lorafleet.server.engine.ports import port_in_use
from lorafleet.server.engine.recipe import EngineRecipe
from lorafleet.server.engine.supervisor import (
    EngineProcess,
    EngineSpec,
    EngineSupervisor,
    resolve_dtype,
    split_cores,
)
from lorafleet.server.settings import Settings
from tests.server.engine.standin import read_pids, standin_spec


def spec(kv_cache_gib: float = 4.0, **changes: object) -> EngineSpec:
    values: dict[str, object] = dict(
        model="/m", served_model_name="base", host="127.0.0.1", port=8100,
        dtype="float32", max_model_len=2048, max_num_seqs=64,
        enable_lora=True, max_loras=4, max_lora_rank=16,
    )  # fmt: skip
    values.update(changes)
    recipe = EngineRecipe(**values)  # type: ignore[arg-type]
    return EngineSpec(recipe, "base", kv_cache_gib=kv_cache_gib, cpu_threads="0-1")


def test_command_runs_the_vllm_module_not_the_console_script() -> None:
    command = spec().command()
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(arg.split("=", 1) for arg in command[3:] if "=" in arg)
    assert flags["--dtype"] == "float32"
    assert flags["--served-model-name"] == "base"
    assert flags["--model"] == "/m"
    assert flags["--max-lora-rank"] == "16"
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "8100"
    assert "--enable-lora" in command
    assert "--enable-lora" not in spec(enable_lora=False).command()
    assert spec(extra_args=("--seed", "1")).command()[-2:] == ["--seed", "1"]
    assert spec().url == "http://127.0.0.1:8100"


def test_environment_binds_cores_and_allows_runtime_lora() -> None:
    env = spec().environment({"PATH": "/bin"})
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["PATH"] == "/bin"
    assert spec(kv_cache_gib=2.5).environment({})["VLLM_CPU_KVCACHE_SPACE"] == "2.5"


def test_cores_are_split_between_replicas() -> None:
    assert split_cores(1, cores=2) == ["0-1"]
    assert split_cores(2, cores=2) == ["0", "1"]
    assert split_cores(2, cores=8) == ["0-3", "4-7"]
    assert split_cores(3, cores=2) == ["0", "1", "0"]


def test_dtype_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_dtype("bfloat16") == "bfloat16"
    monkeypatch.setattr(supervisor, "has_cuda_device", lambda: False)
    monkeypatch.setattr(supervisor, "cpu_flags", lambda: {"avx2"})
    assert resolve_dtype("auto") == "float32"
    monkeypatch.setattr(supervisor, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(supervisor, "has_cuda_device", lambda: True)
    assert resolve_dtype("auto") == "auto"


# Lines from a real engine's log (benchmarks/results/archive/2026-11-28-cpu/fleet/logs).
ENGINE_NOISE = [
    "nanobind: leaked 4 instances!",
    "nanobind: leaked 514 functions!",
    "nanobind: this is likely caused by a reference counting issue in the binding code.",
    ' - leaked instance 0x7fe4f1659248 of type "triton._C.libtriton.ir.attribute"',
    ' - leaked type "PROPAGATE_NAN"',
    ' - leaked function "get_result"',
    " - ... skipped remainder",
    "Triton is installed, but doesn't include CPU backend. Disabling Triton.",
    "(EngineCore pid=24400) WARNING 11-28 21:32:34 [cpu.py:224] Triton is not installed. "
    "triton-cpu is expected on x86 CPUs.",
    "(VllmWorker-0 pid=24440) WARNING 11-28 21:32:29 [vllm.py:725] Model Runner V2 requires "
    "Triton; using the V1 model runner instead.",
    "/x/site-packages/vllm/triton_utils/dispatcher.py:139: FutureWarning: `torch.distributed",
    "  warnings.warn(",
]
ENGINE_NEWS = [
    "(APIServer pid=24253) WARNING 11-28 21:32:35 [api_router.py:33] LoRA dynamic loading & "
    "unloading is enabled in the API server.",
    "INFO:     Application startup complete.",
    "RuntimeError: triton kernel launch failed: out of resources",
    "Traceback (most recent call last):",
]


@pytest.mark.parametrize("line", ENGINE_NOISE)
def test_engine_noise_is_forwarded_at_debug(line: str) -> None:
    assert supervisor.is_engine_noise(line)


@pytest.mark.parametrize("line", ENGINE_NEWS)
def test_other_engine_lines_stay_at_info(line: str) -> None:
    assert not supervisor.is_engine_noise(line)


# --- real processes: stand-in engines (tests/server/engine/standin.py) ------------------------


async def wait_until(probe: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, f"gave up after {timeout_s}s"
        await asyncio.sleep(0.05)


async def test_a_port_in_use_is_one_error_line_not_a_restart_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    pids_file = tmp_path / "pids"
    process = EngineProcess(standin_spec(port, pids_file), "engine-0", restart_backoff_s=0.05)
    with caplog.at_level(logging.INFO, logger=supervisor.__name__):
        await process.start()
        try:
            await asyncio.sleep(1.0)  # twenty back-offs
            assert process.pid is None and process.restarts == 0  # never started
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert errors == [
                f"engine-0: port {port} on 127.0.0.1 is already in use (another lorafleet serve,"
                " or an engine left running?); pin other ports with LORAFLEET_ENGINE_PORT_BASE,"
                " or leave it unset to pick free ones; waiting for it to be free"
            ]
            listener.close()  # whoever held it is gone: the engine starts
            await wait_until(lambda: read_pids(pids_file), 60)
        finally:
            listener.close()
            await process.stop(grace_s=5)
    assert process.restarts == 0


async def test_two_supervisors_run_side_by_side_on_ports_of_their_own(tmp_path: Path) -> None:
    settings = Settings()  # no engine_port_base: each picks free ports
    plans = [local.engine_specs(settings, {settings.served_models[0].name: Path("/m")})]
    plans.append(local.engine_specs(settings, {settings.served_models[0].name: Path("/m")}))
    ports = [plan[0].recipe.port for plan in plans]
    assert ports[0] != ports[1]
    supervisors = [
        EngineSupervisor([EngineProcess(standin_spec(port, tmp_path / f"pids-{port}"), "e")])
        for port in ports
    ]
    try:
        for sup in supervisors:
            await sup.start()
        for port in ports:
            await wait_until(lambda port=port: read_pids(tmp_path / f"pids-{port}"), 60)
            assert port_in_use("127.0.0.1", port)
        assert all(sup.processes[0].restarts == 0 for sup in supervisors)
    finally:
        await asyncio.gather(*(sup.stop() for sup in supervisors))
    assert not any(port_in_use("127.0.0.1", port) for port in ports)
