"""QLoRA and bf16 LoRA on a CUDA GPU through `run_training` (opt-in: `pytest -m gpu`).

Needs a CUDA device, bitsandbytes, TRL. The base is the default model when it is available;
on a machine without it (no model download possible), set LORAFLEET_GPU_CONFIG_DIR to a
directory holding SmolLM2's config.json and tokenizer files, and the test builds a model of that
architecture with random weights: enough to prove the code path (NF4 load, bf16 compute, LoRA
training, validation, manifest), not to measure quality. LORAFLEET_GPU_RESULT=path.json saves
the measurements (docs/gpu-qlora-check.json came from such a run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lorafleet.adapters.base_models import fetch_model
from lorafleet.adapters.training.config import build_config
from lorafleet.adapters.training.synthetic import generate, write_jsonl
from lorafleet.adapters.training.train import build_trainer, prepare, run_training

pytestmark = pytest.mark.gpu


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _cuda():
        pytest.skip("no CUDA device")
    config_dir = os.environ.get("LORAFLEET_GPU_CONFIG_DIR")
    if not config_dir:
        return fetch_model(None)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = tmp_path_factory.mktemp("base") / "smollm2-135m-random"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig.from_pretrained(config_dir))
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    collected: dict[str, Any] = {}
    yield collected  # type: ignore[misc]
    path = os.environ.get("LORAFLEET_GPU_RESULT")
    if path and collected:
        Path(path).write_text(json.dumps(collected, indent=2) + "\n")


def _config(base: Path, tmp_path: Path, **overrides: Any) -> Any:
    data = tmp_path / "train.jsonl"
    write_jsonl(data, generate(96, "train", seed=0))
    values = {
        "base_model": str(base),
        "base_model_id": "smollm2-135m-instruct",
        "dataset": str(data),
        "output": str(tmp_path / "adapter"),
        "max_steps": 8,
        "batch_size": 8,
        "max_length": 640,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 4,
        "progress": False,
        **overrides,
    }
    return build_config(values)


def _environment() -> dict[str, str]:
    import bitsandbytes
    import torch
    import transformers
    import trl

    return {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


def test_qlora_loads_nf4_and_trains(base: Path, tmp_path: Path, results: dict[str, Any]) -> None:
    import bitsandbytes

    config = _config(base, tmp_path, qlora=True)
    run = prepare(config)
    assert (run.plan.precision, run.plan.quantization) == ("bf16", "nf4")
    trainer = build_trainer(run)
    four_bit = [m for m in trainer.model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    assert four_bit, "the base was not loaded in 4-bit"
    assert {m.weight.quant_type for m in four_bit} == {"nf4"}
    del trainer

    manifest = run_training(config).manifest
    assert manifest.hardware.device == "cuda" and manifest.hardware.quantization == "nf4"
    assert manifest.metrics.steps == 8 and manifest.metrics.train_loss is not None
    results["environment"] = _environment()
    results["base"] = (
        "random weights, SmolLM2-135M architecture"
        if os.environ.get("LORAFLEET_GPU_CONFIG_DIR")
        else "smollm2-135m-instruct"
    )
    results["qlora_nf4_bf16"] = {"linear4bit_modules": len(four_bit), **manifest.metrics.__dict__}


def test_bf16_lora(base: Path, tmp_path: Path, results: dict[str, Any]) -> None:
    manifest = run_training(_config(base, tmp_path)).manifest
    assert manifest.hardware.precision == "bf16" and manifest.hardware.quantization is None
    assert manifest.hardware.gradient_checkpointing is True
    results["lora_bf16"] = dict(manifest.metrics.__dict__)
