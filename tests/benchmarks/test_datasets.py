"""Workloads: deterministic, exact lengths where a tokenizer says so, chat files parsed strictly."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lorafleet.benchmarks.datasets import (
    FallbackWords,
    TokenizerWords,
    chat_file_dataset,
    output_lengths,
    random_dataset,
)


def test_same_seed_same_requests_other_seed_other_prompts() -> None:
    a = random_dataset(8, input_len=16, output_len=4, seed=1)
    assert a == random_dataset(8, input_len=16, output_len=4, seed=1)
    b = random_dataset(8, input_len=16, output_len=4, seed=2)
    assert [s.prompt for s in a] != [s.prompt for s in b]


def test_fixed_lengths_and_words() -> None:
    specs = random_dataset(5, input_len=12, output_len=7, seed=0)
    assert all(len(s.prompt.split()) == 12 and s.output_len == 7 for s in specs)
    assert all(s.prompt_len == -1 for s in specs)  # fallback words: only the server can count
    assert specs[0].chat_messages() == [{"role": "user", "content": specs[0].prompt}]


def test_exact_vocabulary_records_prompt_len() -> None:
    words = TokenizerWords(vocabulary=("alpha", "beta", "gamma"))
    specs = random_dataset(3, input_len=5, output_len=2, seed=0, words=words)
    assert all(s.prompt_len == 5 for s in specs)
    assert set(" ".join(s.prompt for s in specs).split()) <= {"alpha", "beta", "gamma"}


def test_prompt_token_count_is_exact_with_the_real_tokenizer(model_dir: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    words = TokenizerWords.from_dir(model_dir)
    assert words.exact and len(words.words()) > 1000
    for spec in random_dataset(10, input_len=100, output_len=4, seed=3, words=words):
        assert len(tokenizer.encode(spec.prompt, add_special_tokens=False).ids) == 100


def test_output_range_ratio_bounds() -> None:
    lengths = output_lengths(500, 100, 0.5, random.Random(0))
    assert min(lengths) >= 50 and max(lengths) <= 150
    assert len(set(lengths)) > 20
    assert output_lengths(3, 10, 0.0, random.Random(0)) == [10, 10, 10]
    with pytest.raises(ValueError, match="range_ratio"):
        output_lengths(1, 10, 1.0, random.Random(0))


@pytest.mark.parametrize(
    "kwargs", [{"input_len": 0, "output_len": 1}, {"input_len": 1, "output_len": 0}]
)
def test_random_dataset_rejects_non_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        random_dataset(1, seed=0, **kwargs)


def test_chat_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(
        '{"messages": [{"role": "system", "content": "be brief"}, '
        '{"role": "user", "content": "hi"}]}\n'
        "\n"
        '{"prompt": "plain", "max_tokens": 9}\n'
    )
    specs = chat_file_dataset(path, 5, output_len=3, seed=0, shuffle=False)
    assert len(specs) == 5
    assert specs[0].prompt == "hi" and specs[0].output_len == 3 and len(specs[0].messages) == 2
    assert specs[1].messages == [{"role": "user", "content": "plain"}] and specs[1].output_len == 9
    assert specs[2] == specs[0]  # reused in order
    shuffled = chat_file_dataset(path, 5, output_len=3, seed=0)
    assert shuffled == chat_file_dataset(path, 5, output_len=3, seed=0)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("not json", "not JSON"),
        ("[1]", "object"),
        ('{"messages": []}', "messages"),
        ('{"prompt": "x", "max_tokens": -2}', "max_tokens"),
    ],
)
def test_chat_file_errors_name_the_line(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n' + line + "\n")
    with pytest.raises(ValueError, match=f"bad.jsonl:2: .*{match}"):
        chat_file_dataset(path, 1, output_len=1, seed=0)


def test_fallback_words_are_plain() -> None:
    assert all(word.isalpha() for word in FallbackWords().words())


def test_prompt_seed_keeps_lengths_and_changes_words() -> None:
    # Arms of one repeat: the same output lengths (an A/B compares equal work), other prompts
    # (no arm reads another's prefix cache).
    one = random_dataset(
        16, input_len=8, output_len=32, output_range_ratio=0.5, seed=7, prompt_seed=1
    )
    two = random_dataset(
        16, input_len=8, output_len=32, output_range_ratio=0.5, seed=7, prompt_seed=2
    )
    assert [s.output_len for s in one] == [s.output_len for s in two]
    assert len({s.output_len for s in one}) > 1
    assert [s.prompt for s in one] != [s.prompt for s in two]
