"""Every adapter rule, one bad adapter each, against SmolLM2's architecture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorafleet.adapters.base_models import ModelInfo
from lorafleet.adapters.validation import AdapterValidationError, validate_adapter_dir
from tests.adapter_factory import make_lora_dir


def test_good_adapter_gives_its_facts(tmp_path: Path, smol: ModelInfo) -> None:
    path = make_lora_dir(tmp_path / "a", smol, rank=8, alpha=16, layers=range(2))
    facts = validate_adapter_dir(path, base=smol, max_rank=16)
    assert facts.rank == 8
    assert facts.alpha == 16
    assert facts.target_modules == ("q_proj", "v_proj")
    assert facts.size_bytes > 0
    assert len(facts.sha256) == 64


def test_same_content_same_hash(tmp_path: Path, smol: ModelInfo) -> None:
    a = make_lora_dir(tmp_path / "a", smol, layers=range(1))
    b = make_lora_dir(tmp_path / "b", smol, layers=range(1))
    c = make_lora_dir(tmp_path / "c", smol, layers=range(1), seed=1)
    hash_a, hash_b, hash_c = (
        validate_adapter_dir(p, base=smol, max_rank=16).sha256 for p in (a, b, c)
    )
    assert hash_a == hash_b != hash_c


def _rewrite_config(path: Path, **changes: Any) -> None:
    config = json.loads((path / "adapter_config.json").read_text())
    config.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda p: (p / "adapter_model.bin").write_bytes(b"pickle"), "pickle_weights"),
        (lambda p: (p / "adapter_model.safetensors").unlink(), "missing_weights"),
        (lambda p: (p / "adapter_config.json").unlink(), "missing_config"),
        (lambda p: (p / "adapter_config.json").write_text("{nope"), "bad_config"),
        (lambda p: _rewrite_config(p, r=4), "shape_mismatch"),
        (lambda p: _rewrite_config(p, modules_to_save=["lm_head"]), "modules_to_save"),
        (lambda p: _rewrite_config(p, target_modules=["q_proj", "wqkv"]), "unknown_target_module"),
        (lambda p: _rewrite_config(p, target_modules=["q_proj"]), "unexpected_tensor"),
        (lambda p: _rewrite_config(p, peft_type="IA3"), "unsupported_type"),
        (lambda p: _rewrite_config(p, r=0), "bad_rank"),
        (lambda p: (p / "adapter_model.safetensors").write_bytes(b"\x00" * 4), "bad_weights"),
    ],
)
def test_bad_adapters_are_refused(tmp_path: Path, smol: ModelInfo, mutate: Any, code: str) -> None:
    path = make_lora_dir(tmp_path / "a", smol, layers=range(2))
    mutate(path)
    with pytest.raises(AdapterValidationError) as info:
        validate_adapter_dir(path, base=smol, max_rank=16)
    assert info.value.code == code


def _truncate(path: Path, drop: int) -> None:
    weights = path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-drop])


@pytest.mark.parametrize("drop", [4, 1000])
def test_truncated_weights_are_refused(tmp_path: Path, smol: ModelInfo, drop: int) -> None:
    """A download or copy cut short: the header is intact, the tensor data is not."""
    path = make_lora_dir(tmp_path / "a", smol, layers=range(2))
    _truncate(path, drop)
    with pytest.raises(AdapterValidationError, match="not a safetensors file") as info:
        validate_adapter_dir(path, base=smol, max_rank=16)
    assert info.value.code == "bad_weights"


def test_rank_over_the_engine_limit(tmp_path: Path, smol: ModelInfo) -> None:
    path = make_lora_dir(tmp_path / "a", smol, rank=32, layers=range(1))
    with pytest.raises(AdapterValidationError) as info:
        validate_adapter_dir(path, base=smol, max_rank=16)
    assert info.value.code == "rank_too_large"


def test_rank_pattern_is_checked_too(tmp_path: Path, smol: ModelInfo) -> None:
    path = make_lora_dir(tmp_path / "a", smol, rank=8, layers=range(1))
    _rewrite_config(path, rank_pattern={"q_proj": 64})
    with pytest.raises(AdapterValidationError) as info:
        validate_adapter_dir(path, base=smol, max_rank=16)
    assert info.value.code == "rank_too_large"


def test_adapter_for_another_base_model(tmp_path: Path, smol: ModelInfo) -> None:
    bigger = ModelInfo(
        path=Path("/models/llama-8b"), model_type="llama", max_position_embeddings=8192,
        target_modules=smol.target_modules,
        module_shapes={k: (v[0] * 2, v[1] * 2) for k, v in smol.module_shapes.items()},
        num_layers=32,
    )  # fmt: skip
    path = make_lora_dir(tmp_path / "a", bigger, layers=range(1))
    with pytest.raises(AdapterValidationError) as info:
        validate_adapter_dir(path, base=smol, max_rank=16)
    assert info.value.code == "base_model_mismatch"
    deep = make_lora_dir(tmp_path / "b", smol, layers=[31])
    with pytest.raises(AdapterValidationError) as info:
        validate_adapter_dir(deep, base=smol, max_rank=16)
    assert info.value.code == "base_model_mismatch"


def test_unknown_config_keys_are_tolerated(tmp_path: Path, smol: ModelInfo) -> None:
    path = make_lora_dir(tmp_path / "a", smol, layers=range(1))
    _rewrite_config(path, some_future_peft_option={"x": 1})
    assert validate_adapter_dir(path, base=smol, max_rank=16).rank == 8


def test_size_limit(tmp_path: Path, smol: ModelInfo) -> None:
    path = make_lora_dir(tmp_path / "a", smol, layers=range(2))
    with pytest.raises(AdapterValidationError) as info:
        validate_adapter_dir(path, base=smol, max_rank=16, max_bytes=1000)
    assert info.value.code == "too_large"
