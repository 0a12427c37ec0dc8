"""`lorafleet export --format w8a8 | w4a16`: usage errors, the missing-llmcompressor message,
the calibration texts and the manifest. (Quantising a real model and serving it with vLLM is
`tests/integration/test_quantized_export.py`.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lorafleet.adapters.training.cli import main
from lorafleet.adapters.training.export import ExportError
from lorafleet.adapters.training.export_quant import (
    QUANT_INSTALL,
    calibration_texts,
    export_manifest,
    group_size,
    linear_columns,
    quantize,
)
from lorafleet.adapters.training.synthetic import generate, write_jsonl


class ChatTemplate:
    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool) -> str:
        assert tokenize is False
        return "".join(f"<{m['role']}>{m['content']}" for m in messages)


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, generate(5, "train", seed=0))
    return path


def llama_dir(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return path


def test_calibration_texts_are_the_first_records_as_the_model_sees_them(
    calibration: Path,
) -> None:
    texts = calibration_texts(calibration, ChatTemplate(), samples=3)
    assert len(texts) == 3
    assert texts[0].startswith("<system>Return JSON") and "<assistant>{" in texts[0]


def test_calibration_needs_chat_records(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    with pytest.raises(ExportError, match="chat `messages`"):
        calibration_texts(path, ChatTemplate(), samples=3)
    path.write_text("\n")
    with pytest.raises(ExportError, match="no calibration records"):
        calibration_texts(path, ChatTemplate(), samples=3)


def test_without_llmcompressor_the_error_says_how_to_add_it(
    tmp_path: Path, calibration: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llmcompressor", None)  # import fails as if absent
    with pytest.raises(ExportError, match="needs llmcompressor") as caught:
        quantize(llama_dir(tmp_path / "m"), tmp_path / "out", "w8a8", calibration)
    assert QUANT_INSTALL in str(caught.value)


def test_unknown_scheme_and_gptq_without_data_are_refused(
    tmp_path: Path, calibration: Path
) -> None:
    with pytest.raises(ExportError, match="unknown format 'w2a2'"):
        quantize(llama_dir(tmp_path / "m"), tmp_path / "out", "w2a2", calibration)
    with pytest.raises(ExportError, match="GPTQ needs calibration data"):
        quantize(tmp_path / "m", tmp_path / "out", "w4a16", None, gptq=True)


def test_cli_usage_errors_and_failures(
    tmp_path: Path, calibration: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    model, out = str(llama_dir(tmp_path / "m")), str(tmp_path / "out")
    assert main(["export", model, "--format", "w8a8", "--gptq", "--output", out]) == 2
    assert "--gptq needs --calibration FILE" in capsys.readouterr().err
    with_cal = ["export", model, "--format", "w4a16", "--output", out, "--calibration"]
    assert main([*with_cal, str(calibration), "--quant", "q8_0"]) == 2
    monkeypatch.setitem(sys.modules, "llmcompressor", None)
    assert main([*with_cal, str(calibration)]) == 1
    assert "needs llmcompressor" in capsys.readouterr().err


def test_manifest_records_sources_method_calibration_and_sizes(
    tmp_path: Path, calibration: Path
) -> None:
    model = llama_dir(tmp_path / "merged")
    (model / "lorafleet-merge.json").write_text(json.dumps(
        {"adapter": "/a", "adapter_sha256": "sha256:aa", "base_model": "/b",
         "base_fingerprint": "sha256:bb", "dtype": "float32"}))  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"x" * 10)
    (out / "config.json").write_text("{}")
    manifest = export_manifest(model, out, "w8a8", calibration, samples=5, max_length=640)
    assert manifest["format"] == "w8a8" and "W8A8" in manifest["method"]
    assert manifest["adapter_sha256"] == "sha256:aa"
    assert manifest["base_fingerprint"] == "sha256:bb"
    assert manifest["source_fingerprint"].startswith("sha256:")
    assert manifest["calibration_data_sha256"].startswith("sha256:")
    assert manifest["calibration_samples"] == 5
    assert manifest["bytes"] == 12 and len(manifest["files"]) == 2


def test_w4a16_group_is_the_largest_that_divides_every_layer() -> None:
    import torch

    # SmolLM2-135M: 576 (hidden) and 1536 (MLP) columns; 576 is not a multiple of 128
    assert group_size([576, 1536]) == 64
    assert group_size([4096, 11008]) == 128  # Llama-2-7B
    assert group_size([800]) == 32
    with pytest.raises(ExportError, match="multiples of 32"):
        group_size([576, 100])
    model = torch.nn.ModuleDict({"up": torch.nn.Linear(576, 1536),
                                 "down": torch.nn.Linear(1536, 576),
                                 "lm_head": torch.nn.Linear(576, 10)})  # fmt: skip
    assert sorted(linear_columns(model)) == [576, 1536]
