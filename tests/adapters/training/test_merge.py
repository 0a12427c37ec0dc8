"""`lorafleet merge` on a tiny random Llama: the merged model computes what base + adapter did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.adapters.training.cli import main
from lorafleet.adapters.training.merge import (
    MERGE_MANIFEST,
    MergeError,
    merge_adapter,
    resolve_base,
)


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
    )  # fmt: skip
    base = tmp_path / "base"
    LlamaForCausalLM(config).save_pretrained(base)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    adapter = tmp_path / "adapter"
    get_peft_model(LlamaForCausalLM.from_pretrained(base), lora).save_pretrained(adapter)
    return base, adapter


def test_merged_model_matches_base_plus_adapter(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base, adapter = tiny
    merged_dir = merge_adapter(adapter, tmp_path / "merged", base_model=str(base))
    tokens = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), adapter)(
            tokens
        ).logits
        plain = LlamaForCausalLM.from_pretrained(base)(tokens).logits
        merged = LlamaForCausalLM.from_pretrained(merged_dir)(tokens).logits
    assert torch.allclose(merged, expected, atol=1e-5)
    assert not torch.allclose(merged, plain, atol=1e-3)  # the adapter did change something
    assert not any(
        "lora" in name for name in LlamaForCausalLM.from_pretrained(merged_dir).state_dict()
    )
    record = json.loads((merged_dir / MERGE_MANIFEST).read_text())
    assert record["adapter_sha256"].startswith("sha256:") and record["dtype"] == "float32"


def test_base_comes_from_the_adapter_config(tiny: tuple[Path, Path]) -> None:
    base, adapter = tiny
    assert resolve_base(adapter, None) == base.resolve()


def test_refuses_a_non_empty_output(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = tiny
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(MergeError, match="not empty"):
        merge_adapter(adapter, tmp_path / "full", base_model=str(base))


def test_cli_reports_a_missing_adapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", str(tmp_path / "nope"), "--output", str(tmp_path / "out")]) == 1
    assert "lorafleet merge:" in capsys.readouterr().err
