"""A few-step real training run, for tests that need a genuine adapter (e.g. served by vLLM).

    from lorafleet.adapters.training.smoke import train_smoke_adapter
    adapter_dir = train_smoke_adapter(tmp_path / "adapters" / "smoke")

It generates a small synthetic dataset next to the output, trains `steps` optimizer steps of
the default base (smollm2-135m-instruct, fp32 on CPU, batch 1, rank 8 on q/v), and
returns the validated adapter directory with its manifest: about 10-30 s on 2 idle CPU cores.
"""

from __future__ import annotations

from pathlib import Path

from lorafleet.adapters.training.config import build_config
from lorafleet.adapters.training.synthetic import generate, write_jsonl
from lorafleet.adapters.training.train import TrainResult, run_training


def train_smoke_adapter(
    output: Path,
    *,
    steps: int = 2,
    base_model: str | None = None,
    lora_r: int = 8,
    target_modules: str = "q_proj,v_proj",
    save_steps: int | None = None,
    resume: bool = False,
) -> TrainResult:
    data = output.with_name(output.name + ".data") / "train.jsonl"
    if not data.exists():
        write_jsonl(data, generate(16, "train", seed=0))
    config = build_config(
        {
            **({"base_model": base_model} if base_model else {}),
            "dataset": str(data),
            "output": str(output),
            "max_steps": steps,
            "batch_size": 1,
            "max_length": 512,
            "lora_r": lora_r,
            "lora_alpha": 2 * lora_r,
            "target_modules": target_modules,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_steps": save_steps or steps,
            "overwrite": True,
            "progress": False,
            "resume": "latest" if resume else None,
        }
    )
    return run_training(config)
