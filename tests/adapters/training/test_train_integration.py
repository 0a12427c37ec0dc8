"""A real 2-step training of the default base on CPU, then a resume from its checkpoint.

Marked `integration`: it loads smollm2-135m-instruct (built by `lorafleet model fetch`) and
trains for real, batch 1, which takes tens of seconds on 2 idle cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.adapters.base_models import fetch_model, model_info
from lorafleet.adapters.manifest import MANIFEST_NAME, read_manifest
from lorafleet.adapters.training.smoke import train_smoke_adapter
from lorafleet.adapters.validation import validate_adapter_dir

pytestmark = pytest.mark.integration


def test_train_then_resume(tmp_path: Path) -> None:
    output = tmp_path / "adapters" / "smoke"
    first = train_smoke_adapter(output, steps=2, save_steps=1)

    files = {p.name for p in output.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", MANIFEST_NAME} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["r"] == 8 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert not config.get("modules_to_save")
    facts = validate_adapter_dir(output, base=model_info(fetch_model(None)), max_rank=16)
    assert facts.rank == 8

    manifest = read_manifest(output)
    assert manifest == first.manifest
    assert manifest.base_model.id == "smollm2-135m-instruct"
    assert manifest.base_model.fingerprint.startswith("sha256:")
    assert manifest.dataset.examples == 16 and manifest.dataset.sha256.startswith("sha256:")
    assert manifest.metrics.steps == 2 and manifest.metrics.resumed_from_step == 0
    assert manifest.metrics.train_loss is not None and manifest.metrics.train_tokens > 0
    assert (
        manifest.hardware.precision == "fp32" and manifest.hardware.gradient_checkpointing is False
    )
    assert manifest.config["lora_r"] == 8 and manifest.libraries["trl"]
    assert manifest.adapter["sha256"] == facts.sha256
    checkpoints = output.with_name("smoke.checkpoints")
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
    ]

    resumed = train_smoke_adapter(output, steps=3, save_steps=1, resume=True)
    assert resumed.manifest.metrics.resumed_from_step == 2
    assert resumed.manifest.metrics.steps == 3
    assert read_manifest(output).metrics.steps == 3
