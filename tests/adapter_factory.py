"""Make LoRA adapter directories in PEFT's on-disk format, without loading any model.

Random `lora_A` and non-zero random `lora_B`, so an adapter really changes the base model's
outputs (PEFT's own init sets B to zero, which would serve the base model unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from lorafleet.adapters.base_models import ModelInfo

_MODULE_PARENT = {
    "q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp",
}  # fmt: skip


def make_lora_dir(
    path: Path,
    base: ModelInfo,
    *,
    rank: int = 8,
    alpha: int = 16,
    targets: Iterable[str] = ("q_proj", "v_proj"),
    seed: int = 0,
    scale: float = 0.05,
    base_model_name_or_path: str | None = None,
    layers: Iterable[int] | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> Path:
    targets = list(targets)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for layer in layers if layers is not None else range(base.num_layers):
        for target in targets:
            in_features, out_features = base.module_shapes[target]
            prefix = f"base_model.model.model.layers.{layer}.{_MODULE_PARENT[target]}.{target}"
            tensors[f"{prefix}.lora_A.weight"] = (
                rng.standard_normal((rank, in_features)) * scale
            ).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = (
                rng.standard_normal((out_features, rank)) * scale
            ).astype(np.float32)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path or str(base.path),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "bias": "none",
        "modules_to_save": None,
        "inference_mode": True,
        "fan_in_fan_out": False,
        "use_rslora": False,
        **(config_overrides or {}),
    }
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return path
