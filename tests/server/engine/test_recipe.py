"""The one recipe for starting vLLM: flags and environment (the chart test checks the chart
against the same recipe)."""

from __future__ import annotations

from lorafleet.server.engine.recipe import ENGINE_MODULE, EngineRecipe, grace_period_s


def test_flags_are_name_value_pairs_and_unset_options_are_left_out() -> None:
    args = EngineRecipe(model="/m", served_model_name="base").args()
    assert args[:2] == ["--model=/m", "--served-model-name=base"]
    assert all(arg.startswith("--") for arg in args)
    names = [arg.split("=", 1)[0] for arg in args]
    assert len(names) == len(set(names)), "a flag given twice"
    for absent in ("--max-num-seqs", "--gpu-memory-utilization", "--host", "--max-cpu-loras"):
        assert absent not in names


def test_engines_drain_on_sigterm_by_default() -> None:
    """vLLM's own default (0) aborts every stream in flight on SIGTERM."""
    args = EngineRecipe(model="/m", served_model_name="b").args()
    assert "--shutdown-timeout=30" in args
    assert "--shutdown-timeout=0" in EngineRecipe("/m", "b", shutdown_timeout_s=0).args()


def test_lora_flags_and_environment_go_together() -> None:
    with_lora = EngineRecipe("/m", "b", max_loras=8, max_lora_rank=64, max_cpu_loras=32)
    assert {"--enable-lora", "--max-loras=8", "--max-lora-rank=64", "--max-cpu-loras=32"} <= set(
        with_lora.args()
    )
    assert with_lora.environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    without = EngineRecipe("/m", "b", enable_lora=False, max_cpu_loras=32)
    assert not any("lora" in arg for arg in without.args())
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in without.environment()
    assert without.environment()["VLLM_NO_USAGE_STATS"] == "1"


def test_command_and_grace_period() -> None:
    recipe = EngineRecipe("/m", "b", tensor_parallel_size=4, extra_args=("--seed=1",))
    command = recipe.command("python3")
    assert command[:3] == ["python3", "-m", ENGINE_MODULE]
    assert "--tensor-parallel-size=4" in command and command[-1] == "--seed=1"
    assert grace_period_s(15, 30) == 60


def test_engine_tracing_is_opt_in() -> None:
    assert not any("otlp" in arg for arg in EngineRecipe("/m", "b").args())
    traced = EngineRecipe("/m", "b", otlp_traces_endpoint="http://collector:4318/v1/traces")
    assert "--otlp-traces-endpoint=http://collector:4318/v1/traces" in traced.args()
    assert traced.environment()["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"
