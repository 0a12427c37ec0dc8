"""`lorafleet merge`: fold a LoRA adapter into its base so the result is served as a base model.

The base is loaded in full precision (fp32 unless told otherwise): merging into a quantised or
bf16 copy would round the merged weights. The output is a plain Hugging Face directory
(config, safetensors, tokenizer) plus `lorafleet-merge.json` recording what went in.
"""

from __future__ import annotations

import json
from pathlib import Path

from lorafleet.adapters.base_models import fetch_model
from lorafleet.adapters.manifest import MANIFEST_NAME, file_sha256, model_fingerprint

MERGE_MANIFEST = "lorafleet-merge.json"


class MergeError(RuntimeError):
    """The adapter or its base could not be found or merged."""


def resolve_base(adapter_dir: Path, base_model: str | None) -> Path:
    """The base to merge into: explicit, else the trainer's manifest, else adapter_config.json."""
    if base_model:
        return fetch_model(base_model)
    manifest = adapter_dir / MANIFEST_NAME
    if manifest.is_file():
        path = json.loads(manifest.read_text()).get("base_model", {}).get("path")
        if path and Path(path).is_dir():
            return Path(path)
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise MergeError(f"{adapter_dir} has no adapter_config.json")
    name = json.loads(config.read_text()).get("base_model_name_or_path")
    if not name:
        raise MergeError("the adapter does not name its base model; pass --base-model")
    return fetch_model(name)


def merge_adapter(
    adapter_dir: Path, output: Path, *, base_model: str | None = None, dtype: str = "float32"
) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if output.exists() and any(output.iterdir()):
        raise MergeError(f"{output} exists and is not empty")
    base_path = resolve_base(adapter_dir, base_model)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(output, safe_serialization=True)
    if any((base_path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        AutoTokenizer.from_pretrained(base_path).save_pretrained(output)
    record = {
        "base_model": str(base_path),
        "base_fingerprint": model_fingerprint(base_path),
        "adapter": str(adapter_dir.resolve()),
        "adapter_sha256": file_sha256(adapter_dir / "adapter_model.safetensors"),
        "dtype": dtype,
    }
    (output / MERGE_MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    return output
