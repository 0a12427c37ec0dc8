"""The default base model's architecture without its weights (cluster-mode gateways)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.adapters.base_models import (
    DEFAULT_MODEL_ID,
    default_cache_dir,
    fetch_model_config,
    model_info,
)
from tests.adapters.conftest import SMOL

BUILT = default_cache_dir() / "models" / DEFAULT_MODEL_ID


def test_default_model_config_needs_no_build(tmp_path: Path) -> None:
    path = fetch_model_config(DEFAULT_MODEL_ID, tmp_path)
    info = model_info(path)
    assert (info.module_shapes, info.num_layers) == (SMOL.module_shapes, SMOL.num_layers)
    assert not (tmp_path / "models" / DEFAULT_MODEL_ID).exists()  # nothing was built


@pytest.mark.skipif(not (BUILT / "config.json").is_file(), reason="default model not built here")
def test_shipped_config_matches_the_built_model(tmp_path: Path) -> None:
    shipped = json.loads((fetch_model_config(None, tmp_path) / "config.json").read_text())
    built = json.loads((BUILT / "config.json").read_text())
    assert {key: built[key] for key in shipped} == shipped
