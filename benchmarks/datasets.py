"""Workloads: what each benchmark request asks for.

    random_dataset(64, input_len=128, output_len=32, seed=0, words=TokenizerWords.from_dir(d))
    chat_file_dataset(Path("prompts.jsonl"), 64, output_len=64, seed=0)

Random prompts are built from words that are each one token of the target tokenizer (a
space-prefixed, lower-case, alphabetic BPE token; the first word also one token without its
space), so a prompt of N words is N tokens and the input length is exact; the server's `usage`
reports the count it saw either way. Without a tokenizer a built-in word list gives about N
tokens. Output length is fixed by sending `max_tokens` = `min_tokens` = N with `ignore_eos`
(see loadgen), as `vllm bench serve` does.

Same seed, same arguments: same requests. Arms of a comparison use different seeds so that
one arm cannot warm the engine's prefix cache for another.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload. `prompt` feeds /v1/completions, `messages` /v1/chat/completions;
    a random-dataset spec carries both (the prompt as the single user message)."""

    prompt: str
    output_len: int
    prompt_len: int = -1  # tokens, when known locally; -1 when only the server can count
    messages: list[dict[str, Any]] = field(default_factory=list)

    def chat_messages(self) -> list[dict[str, Any]]:
        return self.messages or [{"role": "user", "content": self.prompt}]


class WordSource(Protocol):
    """Words to build prompts from, and whether each is exactly one token."""

    @property
    def exact(self) -> bool: ...

    def words(self) -> Sequence[str]: ...

    def first_words(self) -> Sequence[str]:
        """Words that are one token also without the leading space (to open a prompt)."""
        ...


# Common English words; most are one token in Llama/GPT-style BPE vocabularies.
_FALLBACK_TEXT = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy process music market sense nation plan college interest "
    "death experience effect class control care field development role effort rate heart "
    "drug show leader light voice wife police mind price report decision son view "
    "relationship town road arm difference value building action model season society tax "
    "director position player record paper space ground form event official matter center "
    "couple site project activity star table need court oil situation cost industry figure "
    "street image phone data picture practice piece land product doctor wall patient worker "
    "news test movie north love support technology step baby computer type attention film "
    "tree source organization hair window evidence population site river "
)
_FALLBACK_WORDS = tuple(_FALLBACK_TEXT.split())


@dataclass(frozen=True)
class FallbackWords:
    exact: bool = False

    def words(self) -> Sequence[str]:
        return _FALLBACK_WORDS

    def first_words(self) -> Sequence[str]:
        return _FALLBACK_WORDS


@dataclass(frozen=True)
class TokenizerWords:
    """Single-token words of a Hugging Face `tokenizer.json` (byte-level BPE, `Ġ` = space)."""

    vocabulary: tuple[str, ...]
    openers: tuple[str, ...] = ()
    exact: bool = True

    @classmethod
    def from_dir(cls, model_dir: Path) -> TokenizerWords:
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(model_dir / "tokenizer.json")).get_vocab()
        words = sorted(t[1:] for t in vocab if t.startswith("Ġ") and _plain_word(t[1:]))
        if len(words) < 100:  # not a byte-level BPE vocabulary: lengths would not be exact
            return cls(vocabulary=tuple(_FALLBACK_WORDS), exact=False)
        return cls(vocabulary=tuple(words), openers=tuple(w for w in words if w in vocab))

    def words(self) -> Sequence[str]:
        return self.vocabulary

    def first_words(self) -> Sequence[str]:
        return self.openers or self.vocabulary


def _plain_word(text: str) -> bool:
    return 3 <= len(text) <= 8 and text.isascii() and text.isalpha() and text.islower()


def output_lengths(
    count: int, output_len: int, range_ratio: float, rng: random.Random
) -> list[int]:
    """Lengths uniform in [len*(1-r), len*(1+r)] (vLLM's `--random-range-ratio`), at least 1."""
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"range_ratio must be in [0, 1), got {range_ratio}")
    low = max(1, round(output_len * (1 - range_ratio)))
    high = max(low, round(output_len * (1 + range_ratio)))
    return [rng.randint(low, high) for _ in range(count)]


def random_dataset(
    count: int,
    *,
    input_len: int,
    output_len: int,
    seed: int,
    words: WordSource | None = None,
    output_range_ratio: float = 0.0,
    prompt_seed: int | None = None,
) -> list[RequestSpec]:
    """`count` prompts of `input_len` random words, each asking for a fixed (or ranged) output.

    `seed` draws the output lengths, `prompt_seed` (default: `seed`) the words: two runs with
    one seed and different prompt seeds ask for the same lengths with different text."""
    if count < 1 or input_len < 1 or output_len < 1:
        raise ValueError("count, input_len and output_len must be positive")
    source = words or FallbackWords()
    vocabulary, openers = source.words(), source.first_words()
    lengths = output_lengths(count, output_len, output_range_ratio, random.Random(seed))
    rng = random.Random(seed if prompt_seed is None else prompt_seed)
    specs = []
    for length in lengths:
        chosen = [rng.choice(openers)] + [rng.choice(vocabulary) for _ in range(input_len - 1)]
        prompt = " ".join(chosen)
        specs.append(
            RequestSpec(
                prompt=prompt, output_len=length, prompt_len=input_len if source.exact else -1
            )
        )
    return specs


def chat_file_dataset(
    path: Path, count: int, *, output_len: int, seed: int, shuffle: bool = True
) -> list[RequestSpec]:
    """Chat prompts from a JSONL file, one object a line: `{"messages": [...]}` or
    `{"prompt": "..."}`, optionally with `max_tokens` (else `output_len`). Lines are reused
    in order (after a seeded shuffle) until `count` requests exist."""
    rows = [_parse_line(line, number, path) for number, line in _lines(path)]
    if not rows:
        raise ValueError(f"{path}: no prompts")
    if shuffle:
        random.Random(seed).shuffle(rows)
    specs = []
    for index in range(count):
        messages, length = rows[index % len(rows)]
        specs.append(
            RequestSpec(
                prompt=_last_user_text(messages), output_len=length or output_len, messages=messages
            )
        )
    return specs


def _lines(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse_line(line: str, number: int, path: Path) -> tuple[list[dict[str, Any]], int]:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
    if not isinstance(row, dict):
        raise ValueError(f"{path}:{number}: expected an object")
    messages = row.get("messages")
    if messages is None and isinstance(row.get("prompt"), str):
        messages = [{"role": "user", "content": row["prompt"]}]
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{path}:{number}: needs `messages` (a non-empty list) or `prompt`")
    length = row.get("max_tokens", 0)
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"{path}:{number}: max_tokens must be a positive integer")
    return messages, length


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""
