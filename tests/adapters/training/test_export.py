"""`lorafleet export --format gguf` on a tiny random Llama merged with a LoRA adapter.

The files are read back two independent ways: gguf-py's `GGUFReader` (names, types, metadata)
and transformers' GGUF loader, which undoes llama.cpp's q/k permutation on its own; the model
it rebuilds must compute what the merged model computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lorafleet.adapters.training.cli import main
from lorafleet.adapters.training.export import (
    EXPORT_MANIFEST,
    ExportError,
    export_model,
    llama3_rope_factors,
    permute_rotary,
    rope_parameters,
)
from lorafleet.adapters.training.gguf_tokenizer import TokenizerExportError, detect_pre
from lorafleet.adapters.training.merge import merge_adapter

LAYERS = 2
TEXT = "Claim of 1 250 000 rubles under a supply contract."


def tiny_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator([TEXT, "The court dismissed the claim.", "rubles " * 20], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )  # fmt: skip
    fast.save_pretrained(path)


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True,
    )  # fmt: skip
    base = root / "base"
    LlamaForCausalLM(config).save_pretrained(base)
    tiny_tokenizer(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"],
                      init_lora_weights=False)  # fmt: skip
    adapter = root / "adapter"
    get_peft_model(LlamaForCausalLM.from_pretrained(base), lora).save_pretrained(adapter)
    return merge_adapter(adapter, root / "merged", base_model=str(base))


@pytest.fixture(scope="module")
def exported(merged: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf")
    export_model(merged, out, ["q8_0", "q4_0", "f16"])
    return out


def reader(path: Path) -> Any:
    from gguf import GGUFReader

    return GGUFReader(path)


def field(gguf_reader: Any, key: str) -> Any:
    return gguf_reader.fields[key].contents()


def test_q8_0_file_has_llama_tensors_types_and_metadata(exported: Path) -> None:
    from gguf import GGMLQuantizationType as Q

    r = reader(exported / "merged-q8_0.gguf")
    types = {t.name: t.tensor_type for t in r.tensors}
    # token_embd + output_norm + 9 per block; tied embeddings: no separate output.weight
    assert len(types) == 2 + 9 * LAYERS and "output.weight" not in types
    assert types["token_embd.weight"] == Q.Q8_0
    assert types["blk.0.attn_q.weight"] == Q.Q8_0 and types["blk.1.ffn_down.weight"] == Q.Q8_0
    assert types["blk.0.attn_norm.weight"] == Q.F32 and types["output_norm.weight"] == Q.F32
    assert field(r, "general.architecture") == "llama"
    assert field(r, "llama.block_count") == LAYERS
    assert field(r, "llama.attention.head_count") == 4
    assert field(r, "llama.attention.head_count_kv") == 2
    assert field(r, "llama.rope.dimension_count") == 16
    assert field(r, "general.file_type") == 7  # MOSTLY_Q8_0
    assert field(r, "tokenizer.ggml.model") == "gpt2"
    assert field(r, "tokenizer.ggml.pre") == "gpt-2"
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == 320 and tokens[-1] == "[PAD319]"  # rows past the tokenizer: unused
    assert tokens[field(r, "tokenizer.ggml.eos_token_id")] == "<|im_end|>"
    assert len(field(r, "tokenizer.ggml.merges")) > 0


def test_4bit_keeps_embeddings_at_8_bits(exported: Path) -> None:
    from gguf import GGMLQuantizationType as Q

    types = {t.name: t.tensor_type for t in reader(exported / "merged-q4_0.gguf").tensors}
    assert types["token_embd.weight"] == Q.Q8_0
    assert types["blk.0.attn_k.weight"] == Q.Q4_0 and types["blk.1.ffn_up.weight"] == Q.Q4_0
    sizes = {q: (exported / f"merged-{q}.gguf").stat().st_size for q in ("f16", "q8_0", "q4_0")}
    assert sizes["q4_0"] < sizes["q8_0"] < sizes["f16"]


@pytest.mark.parametrize(("quant", "atol"), [("f16", 2e-2), ("q8_0", 0.1)])
def test_transformers_rebuilds_the_merged_model(
    merged: Path, exported: Path, quant: str, atol: float
) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    name = f"merged-{quant}.gguf"
    rebuilt = LlamaForCausalLM.from_pretrained(exported, gguf_file=name, dtype=torch.float32)
    original = LlamaForCausalLM.from_pretrained(merged)
    ids = AutoTokenizer.from_pretrained(merged)(TEXT, return_tensors="pt").input_ids
    assert (
        AutoTokenizer.from_pretrained(exported, gguf_file=name)(TEXT).input_ids == ids[0].tolist()
    )
    with torch.no_grad():
        want, got = original(ids).logits, rebuilt(ids).logits
    assert torch.allclose(got, want, atol=atol)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_manifest_names_the_adapter_and_base(merged: Path, exported: Path) -> None:
    manifest = json.loads((exported / EXPORT_MANIFEST).read_text())
    merge_record = json.loads((merged / "lorafleet-merge.json").read_text())
    assert manifest["adapter_sha256"] == merge_record["adapter_sha256"]
    assert manifest["base_fingerprint"] == merge_record["base_fingerprint"]
    assert manifest["source_fingerprint"].startswith("sha256:")
    files = {f["quant"]: f for f in manifest["files"]}
    assert set(files) == {"q8_0", "q4_0", "f16"}
    q8 = files["q8_0"]
    assert q8["bytes"] == (exported / q8["file"]).stat().st_size
    assert q8["tensor_types"] == {"Q8_0": 1 + 7 * LAYERS, "F32": 1 + 2 * LAYERS}


def test_permute_rotary_interleaves_the_halves_of_each_head() -> None:
    # 2 heads of head_dim 4, one input column: rows (x0 x1 y0 y1) per head -> (x0 y0 x1 y1)
    weights = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert permute_rotary(weights, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_detects_pre_tokenizers_and_refuses_unknown_ones() -> None:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert detect_pre(byte_level) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert detect_pre({"type": "Sequence", "pretokenizers": [digits, byte_level]}) == "smollm"
    llama3 = {
        "type": "Split",
        "pattern": {
            "Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
        },
    }
    no_regex = {**byte_level, "use_regex": False}
    assert detect_pre({"type": "Sequence", "pretokenizers": [llama3, no_regex]}) == "llama-bpe"
    with pytest.raises(TokenizerExportError, match="--tokenizer-pre"):
        detect_pre({"type": "Metaspace"})


LLAMA3_ROPE = {
    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
}  # fmt: skip


def test_llama3_rope_factors_are_what_transformers_divides_by() -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = LlamaConfig(hidden_size=4096, num_attention_heads=32,
                         max_position_embeddings=131072, rope_parameters=LLAMA3_ROPE)  # fmt: skip
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    default = 1.0 / 500000.0 ** (np.arange(0, 128, 2, dtype=np.float64) / 128)
    factors = llama3_rope_factors(LLAMA3_ROPE, 500000.0, 128)
    assert np.allclose(factors, default / scaled.double().numpy(), rtol=1e-5)
    assert factors[0] == 1.0 and factors[-1] == 8.0 and ((factors > 1) & (factors < 8)).any()


def test_llama3_rope_goes_in_as_rope_freqs(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rope_parameters=LLAMA3_ROPE,
    )  # fmt: skip
    model_dir = tmp_path / "llama3"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tiny_tokenizer(model_dir)
    export_model(model_dir, tmp_path / "out", ["f16"])
    tensors = {t.name: t for t in reader(tmp_path / "out" / "llama3-f16.gguf").tensors}
    assert np.array_equal(
        tensors["rope_freqs.weight"].data, llama3_rope_factors(LLAMA3_ROPE, 500000.0, 16)
    )


def test_refuses_a_rope_scaling_it_cannot_write() -> None:
    with pytest.raises(ExportError, match="'yarn' is not exported"):
        rope_parameters({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}})
    assert rope_parameters({"rope_theta": 1e4})[1:] == (1e4, "default")


def test_refuses_a_non_llama_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ExportError, match="only llama"):
        export_model(tmp_path, tmp_path / "out", ["q8_0"])


def test_cli_exports_and_prints_the_manifest(
    merged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    assert main(["export", str(merged), "--quant", "q4_1", "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [f["file"] for f in printed["files"]] == ["merged-q4_1.gguf"]
    types = {t.name: t.tensor_type.name for t in reader(out / "merged-q4_1.gguf").tensors}
    assert types["blk.0.attn_v.weight"] == "Q4_1" and types["token_embd.weight"] == "Q8_0"


def test_cli_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope"), "--output", str(tmp_path / "out")]) == 1
    assert "lorafleet export:" in capsys.readouterr().err
