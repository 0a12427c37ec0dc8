"""Benchmark scenarios by name. Each module has NAME, HELP, add_arguments(parser),
run(ctx, args) -> result dict, and optionally plots(result, out_dir) -> list of PNG paths."""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {
    "gateway-overhead": "gateway_overhead",
    "vllm-vs-transformers": "vllm_vs_transformers",
    "lora-overhead": "lora_overhead",
    "adapter-cold-start": "adapter_cold_start",
    "sweep": "sweep",
    "cost": "cost",
    "fleet": "fleet",
    "product": "product",
    "lora-profile": "lora_profile",
}
_TOOLS = {"load": "load"}

SCENARIO_NAMES = tuple(_MODULES)


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{(_MODULES | _TOOLS)[name]}")
