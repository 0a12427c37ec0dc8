from __future__ import annotations

import pytest

from lorafleet.server.engine import supervisor
from lorafleet.server.engine.recipe import EngineRecipe
from lorafleet.server.engine.supervisor import EngineSpec, resolve_dtype, split_cores


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
