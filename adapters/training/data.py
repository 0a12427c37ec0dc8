"""Training data: JSONL files validated line by line, normalised for TRL.

Accepted line formats (one per file):

- chat: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`,
  ending with an assistant message;
- prompt/completion: `{"prompt": "...", "completion": "..."}` (plain text), or both as lists of
  chat messages.

An optional `"meta"` object per line is ignored (provenance, e.g. the synthetic generator's).

Loss is on assistant tokens only. A chat example becomes a conversational prompt/completion
pair: the prompt is every message before the last (earlier assistant turns are context, not
trained), the completion is the final assistant message. TRL then masks the prompt
(`completion_only_loss`), which needs no `{% generation %}` markers in the base's chat template
(SmolLM2's and many others have none).

Every error names the file and line: `train.jsonl:17: message 2 has role 'bot'`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorafleet.adapters.manifest import file_sha256

ROLES = ("system", "user", "assistant")
_MAX_REPORTED = 20


class DatasetError(ValueError):
    """The dataset file is unusable; the message lists the offending lines."""


@dataclass(frozen=True)
class LoadedDataset:
    path: Path
    rows: list[dict[str, Any]]  # {"prompt": ..., "completion": ...} for TRL
    format: str  # "chat" | "prompt_completion" | "conversational_prompt_completion"
    sha256: str
    bytes: int


def load_jsonl(path: Path) -> LoadedDataset:
    """Read and validate `path`; raise `DatasetError` listing up to 20 bad lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc}") from exc
    rows: list[dict[str, Any]] = []
    formats: set[str] = set()
    errors: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            fmt, row = parse_line(line)
        except DatasetError as exc:
            errors.append(f"{path.name}:{number}: {exc}")
            continue
        if formats and fmt not in formats:
            errors.append(f"{path.name}:{number}: {fmt} line in a {next(iter(formats))} file")
            continue
        formats.add(fmt)
        rows.append(row)
    if errors:
        shown = "\n  ".join(errors[:_MAX_REPORTED])
        more = (
            f"\n  ... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
        )
        raise DatasetError(f"{path}: {len(errors)} invalid line(s):\n  {shown}{more}")
    if not rows:
        raise DatasetError(f"dataset {path} has no examples")
    return LoadedDataset(
        path=path,
        rows=rows,
        format=formats.pop(),
        sha256=file_sha256(path),
        bytes=path.stat().st_size,
    )


def parse_line(line: str) -> tuple[str, dict[str, Any]]:
    """One JSONL line -> (format name, TRL prompt/completion row)."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise DatasetError(f"not valid JSON ({exc.args[0]})") from exc
    if not isinstance(record, dict):
        raise DatasetError("each line must be a JSON object")
    keys = set(record) - {"meta"}
    if keys == {"messages"}:
        messages = _messages(record["messages"], "messages")
        if messages[-1]["role"] != "assistant":
            raise DatasetError("the last message must be the assistant's answer (it is trained)")
        if not any(m["role"] == "user" for m in messages):
            raise DatasetError("a conversation needs at least one user message")
        return "chat", {"prompt": messages[:-1], "completion": messages[-1:]}
    if keys == {"prompt", "completion"}:
        return _prompt_completion(record["prompt"], record["completion"])
    raise DatasetError(
        f"expected keys 'messages' or 'prompt' + 'completion' (and optional 'meta'), "
        f"got {sorted(record)}"
    )


def _prompt_completion(prompt: Any, completion: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(prompt, str) and isinstance(completion, str):
        if not prompt or not completion:
            raise DatasetError("prompt and completion must be non-empty")
        return "prompt_completion", {"prompt": prompt, "completion": completion}
    if isinstance(prompt, list) and isinstance(completion, list):
        prompt_messages = _messages(prompt, "prompt")
        completion_messages = _messages(completion, "completion")
        if [m["role"] for m in completion_messages] != ["assistant"]:
            raise DatasetError("completion must be exactly one assistant message")
        row = {"prompt": prompt_messages, "completion": completion_messages}
        return "conversational_prompt_completion", row
    raise DatasetError("prompt and completion must both be strings or both lists of messages")


def _messages(value: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{key!r} must be a non-empty list of messages")
    out: list[dict[str, str]] = []
    for index, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            raise DatasetError(f"{key} message {index} is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DatasetError(f"{key} message {index} has role {role!r} (use {', '.join(ROLES)})")
        if not isinstance(content, str) or not content.strip():
            raise DatasetError(f"{key} message {index} has empty or non-string content")
        out.append({"role": role, "content": content})
    return out
