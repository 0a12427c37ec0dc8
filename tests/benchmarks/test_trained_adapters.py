"""The product benchmark refuses adapters that are not trained: a zero A or B anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorafleet.benchmarks.lora_adapters import AdapterCreationError
from lorafleet.benchmarks.trained_adapters import cache_key, check_trained

PREFIX = "base_model.model.model.layers.0.self_attn"


def _adapter(path: Path, *, zero: str | None = None, rank: int = 16) -> Path:
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank}))
    tensors = {}
    for module in ("q_proj", "v_proj"):
        for part, shape in (("lora_A", (rank, 8)), ("lora_B", (8, rank))):
            name = f"{PREFIX}.{module}.{part}.weight"
            tensors[name] = (
                np.zeros(shape, np.float32) if name == zero else np.ones(shape, np.float32)
            )
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


def test_a_trained_adapter_passes(tmp_path: Path) -> None:
    check_trained(_adapter(tmp_path / "ok"), 16)


@pytest.mark.parametrize("part", ["lora_A", "lora_B"])
def test_a_zero_weight_on_any_target_is_refused(tmp_path: Path, part: str) -> None:
    adapter = _adapter(tmp_path / "zero", zero=f"{PREFIX}.v_proj.{part}.weight")
    with pytest.raises(AdapterCreationError, match="all-zero"):
        check_trained(adapter, 16)


def test_another_rank_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AdapterCreationError, match="rank 8"):
        check_trained(_adapter(tmp_path / "r8", rank=8), 16)


def test_cache_keys_differ_by_seed_and_targets() -> None:
    keys = {cache_key(16, t, s) for t in ("all-linear", "q_proj,v_proj") for s in (1, 2)}
    assert len(keys) == 4 and all("," not in key for key in keys)
