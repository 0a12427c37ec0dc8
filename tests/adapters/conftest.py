from __future__ import annotations

from pathlib import Path

import pytest

from lorafleet.adapters.base_models import ModelInfo

# SmolLM2-135M's architecture, so these tests need no model files.
SMOL = ModelInfo(
    path=Path("/models/smollm2-135m-instruct"),
    model_type="llama",
    max_position_embeddings=8192,
    target_modules=frozenset(
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    ),
    module_shapes={
        "q_proj": (576, 576),
        "k_proj": (576, 192),
        "v_proj": (576, 192),
        "o_proj": (576, 576),
        "gate_proj": (576, 1536),
        "up_proj": (576, 1536),
        "down_proj": (1536, 576),
    },
    num_layers=30,
)


@pytest.fixture
def smol() -> ModelInfo:
    return SMOL
