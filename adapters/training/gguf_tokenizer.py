"""The tokenizer of a Hugging Face directory, written into a GGUF file as llama.cpp reads it.

Only byte-level BPE tokenizers (`tokenizer.json`, as Llama 3, SmolLM and GPT-2 ship) are
handled: the token list in id order, each token's type, the merges, the special token ids and
the chat template (the last three through gguf-py's `SpecialVocab`).

llama.cpp also needs the name of the pre-tokenizer (`tokenizer.ggml.pre`): the regex that splits
text before BPE. Its converter recognises a tokenizer by hashing the ids of a probe text; here it
is read from the `pre_tokenizer` structure of `tokenizer.json`, which names the same splits
without a table of hashes. An unrecognised structure is refused rather than guessed: a wrong
pre-tokenizer silently changes how every prompt is tokenized. `--tokenizer-pre` overrides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class TokenizerExportError(ValueError):
    """The tokenizer cannot be written to GGUF as it is; the message says what to do."""


# The Llama 3 split regex starts with its case-insensitive contraction group.
_LLAMA3_MARK = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"


def detect_pre(pre_tokenizer: dict[str, Any] | None) -> str:
    """llama.cpp's pre-tokenizer name for a `tokenizer.json` `pre_tokenizer` entry."""
    steps = _steps(pre_tokenizer)
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # GPT-2's regex with every digit split apart
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex", "")
        if pattern.startswith(_LLAMA3_MARK) and "\\p{N}{1,3}" in pattern:
            return "llama-bpe"
    raise TokenizerExportError(
        f"unrecognised pre-tokenizer {json.dumps(pre_tokenizer)[:200]}; name llama.cpp's "
        "equivalent with --tokenizer-pre (see tokenizer.ggml.pre in llama.cpp)"
    )


def _steps(pre_tokenizer: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not pre_tokenizer:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return list(pre_tokenizer.get("pretokenizers") or [])
    return [pre_tokenizer]


def add_tokenizer(writer: Any, model_dir: Path, vocab_size: int, pre: str | None) -> str:
    """Write the tokenizer of `model_dir` into `writer`; returns the pre-tokenizer name used."""
    import gguf

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise TokenizerExportError(f"{model_dir} has no tokenizer.json (a fast BPE tokenizer)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if (data.get("model") or {}).get("type") != "BPE":
        raise TokenizerExportError("only BPE tokenizers are exported (tokenizer.json model.type)")
    pre = pre or detect_pre(data.get("pre_tokenizer"))
    tokens, types = token_table(data, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(
        writer, quiet=True
    )
    return pre


def token_table(data: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens in id order and their llama.cpp types; ids the model has but the tokenizer
    lacks (embedding rows padded to a round size) become unused placeholders."""
    from gguf import TokenType

    by_id: dict[int, tuple[str, int]] = {
        int(i): (token, int(TokenType.NORMAL)) for token, i in data["model"]["vocab"].items()
    }
    for added in data.get("added_tokens") or []:
        kind = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
        by_id[int(added["id"])] = (added["content"], int(kind))
    size = max(vocab_size, max(by_id) + 1)
    if size > vocab_size:
        raise TokenizerExportError(
            f"the tokenizer has id {max(by_id)} but the model only {vocab_size} embeddings"
        )
    tokens, types = [], []
    for i in range(size):
        token, token_type = by_id.get(i, (f"[PAD{i}]", int(TokenType.UNUSED)))
        tokens.append(token)
        types.append(token_type)
    return tokens, types
