"""Dataset loading: formats, normalisation to prompt/completion, errors with line numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorafleet.adapters.training.data import DatasetError, load_jsonl


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


CHAT = {
    "messages": [
        {"role": "system", "content": "Extract."},
        {"role": "user", "content": "text"},
        {"role": "assistant", "content": "{}"},
    ],
    "meta": {"synthetic": True},
}


def test_chat_becomes_conversational_prompt_completion(tmp_path: Path) -> None:
    data = load_jsonl(write(tmp_path / "d.jsonl", [CHAT, "", CHAT]))
    assert data.format == "chat"
    assert len(data.rows) == 2  # the blank line is skipped
    row = data.rows[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["completion"] == [{"role": "assistant", "content": "{}"}]
    assert data.sha256.startswith("sha256:")


def test_plain_prompt_completion(tmp_path: Path) -> None:
    data = load_jsonl(write(tmp_path / "d.jsonl", [{"prompt": "2+2=", "completion": "4"}]))
    assert data.format == "prompt_completion"
    assert data.rows == [{"prompt": "2+2=", "completion": "4"}]


def test_errors_name_every_bad_line(tmp_path: Path) -> None:
    bad_role = {"messages": [{"role": "bot", "content": "hi"}]}
    ends_with_user = {"messages": [{"role": "user", "content": "hi"}]}
    path = write(
        tmp_path / "train.jsonl",
        [CHAT, "{not json", bad_role, ends_with_user, {"text": "x"}, [1, 2]],
    )
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    message = str(info.value)
    assert "5 invalid line(s)" in message
    assert "train.jsonl:2: not valid JSON" in message
    assert "train.jsonl:3: messages message 1 has role 'bot'" in message
    assert "train.jsonl:4: the last message must be the assistant's answer" in message
    assert "train.jsonl:5: expected keys 'messages' or 'prompt' + 'completion'" in message
    assert "train.jsonl:6: each line must be a JSON object" in message


def test_mixed_formats_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [CHAT, {"prompt": "a", "completion": "b"}])
    with pytest.raises(DatasetError, match=r"d.jsonl:2: prompt_completion line in a chat file"):
        load_jsonl(path)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "a", "completion": ""}, "must be non-empty"),
        (
            {"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]},
            "must both be strings or both lists",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "a"}],
                "completion": [{"role": "user", "content": "b"}],
            },
            "exactly one assistant message",
        ),
        ({"messages": [{"role": "assistant", "content": "b"}]}, "at least one user message"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty or non-string content"),
    ],
)
def test_line_level_rules(tmp_path: Path, record: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_jsonl(write(tmp_path / "d.jsonl", [record]))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no examples"):
        load_jsonl(write(tmp_path / "d.jsonl", [""]))
    with pytest.raises(DatasetError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_error_list_is_capped(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"25 invalid line\(s\):[\s\S]*and 5 more"):
        load_jsonl(write(tmp_path / "d.jsonl", ["nope"] * 25))
