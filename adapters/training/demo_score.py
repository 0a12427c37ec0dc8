"""The demo's arms: who answers the test split, how, and the raw predictions each one leaves.

An arm is a model asked a certain way through one OpenAI-compatible endpoint (the gateway):

- `base`: the base model, the task's instruction, nothing else (what the demo always showed);
- `base-fewshot-schema`: the base model with worked examples from the training labels in the
  prompt and `response_format: json_schema` (the task's schema, which vLLM enforces while
  decoding): the strongest answer a user gets without training;
- `adapter`: the trained LoRA adapter, requested by name;
- `merged` and every served export: the adapter folded into the base (`lorafleet merge`) and
  its quantised exports, each a base model of the gateway.

Two trivial arms need no model: `empty` (no answer at all) and `majority` (every enumerated
field set to its most common value in the training labels; for `initiator` that is always
"claimant"). They say what a score is worth.

Each arm writes `predictions-<arm>.jsonl` (one row per test document: its number, template,
the gold label, the raw answer, the error if the request failed, latency and tokens) and an
entry in `arms.json`; `demo_table` scores those files, so the table can be regenerated from
what is committed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorafleet.adapters.training.court_task import label_json_schema
from lorafleet.adapters.training.demo_data import read_jsonl
from lorafleet.adapters.training.evaluation import Answer, EvalItem, EvalOptions, evaluate

ARMS_FILE = "arms.json"
ARM_ORDER = ("empty", "majority", "base", "base-fewshot-schema", "adapter", "merged", "w8a8",
             "w4a16", "gguf-f16", "gguf-q8_0", "gguf-q4_0", "gguf-q4_1")  # fmt: skip
_CYRILLIC = re.compile("[\u0430-\u044f]")
ENUM_FIELDS = ("dispute_subject", "outcome", "initiator")


@dataclass(frozen=True)
class Arm:
    name: str
    model: str | None  # None: a trivial arm, no request
    description: str
    few_shot: int = 0
    json_schema: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the export's size on disk

    def response_format(self) -> dict[str, Any] | None:
        if not self.json_schema:
            return None
        schema = {"name": "court_label", "schema": label_json_schema(), "strict": True}
        return {"type": "json_schema", "json_schema": schema}


def predictions_path(out: Path, arm: str) -> Path:
    return out / f"predictions-{arm}.jsonl"


def pick_shots(train: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` worked examples covering both languages and both initiators, shortest first
    within each kind (every prompt token is prefill on a CPU)."""
    if count <= 0:
        return []
    kinds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in train:
        label = json.loads(record["messages"][-1]["content"])
        lang = "ru" if _CYRILLIC.search(record["messages"][1]["content"]) else "en"
        kinds.setdefault((lang, label["initiator"]), []).append(record)
    for records in kinds.values():
        records.sort(key=lambda r: len(r["messages"][1]["content"]))
    picked: list[dict[str, Any]] = []
    while len(picked) < count and any(kinds.values()):
        for key in sorted(kinds):
            if kinds[key] and len(picked) < count:
                picked.append(kinds[key].pop(0))
    return picked


def few_shot_messages(
    shots: list[dict[str, Any]], messages: list[dict[str, str]]
) -> list[dict[str, str]]:
    """The system instruction, then each shot as a user document and the assistant's JSON,
    then the document to label."""
    turns = [turn for shot in shots for turn in shot["messages"][1:3]]
    return [messages[0], *turns, *messages[1:]]


def majority_answer(train: list[dict[str, Any]]) -> str:
    labels = [json.loads(r["messages"][-1]["content"]) for r in train]
    counts = {name: Counter(label[name] for label in labels) for name in ENUM_FIELDS}
    return json.dumps({name: c.most_common(1)[0][0] for name, c in counts.items()})


def write_predictions(
    out: Path, arm: Arm, test: list[dict[str, Any]], answers: list[Answer]
) -> None:
    with predictions_path(out, arm.name).open("w", encoding="utf-8") as f:
        for number, (record, answer) in enumerate(zip(test, answers, strict=True), start=1):
            row = {
                "doc": number,
                "template": record.get("meta", {}).get("template"),
                "gold": json.loads(record["messages"][-1]["content"]),
                "answer": answer.text,
                "error": answer.error,
                "latency_s": None if answer.latency_s is None else round(answer.latency_s, 3),
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _other_arms(out: Path, name: str) -> list[dict[str, Any]]:
    path = out / ARMS_FILE
    arms = json.loads(path.read_text()) if path.is_file() else []
    return [a for a in arms if a["name"] != name]


def _write_arms(out: Path, arms: list[dict[str, Any]]) -> None:
    order = {name: index for index, name in enumerate(ARM_ORDER)}
    arms.sort(key=lambda a: order.get(a["name"], len(order)))
    (out / ARMS_FILE).write_text(json.dumps(arms, indent=2, ensure_ascii=False) + "\n")


def forget_arm(out: Path, name: str) -> None:
    """Drop an arm an earlier run left (and its predictions): this run could not serve it."""
    _write_arms(out, _other_arms(out, name))
    predictions_path(out, name).unlink(missing_ok=True)


def record_arm(out: Path, arm: Arm, settings: dict[str, Any]) -> None:
    _write_arms(out, [*_other_arms(out, arm.name), {**asdict(arm), **settings}])


def run_trivial(out: Path, arm: Arm, test: list[dict[str, Any]], answer: str) -> None:
    write_predictions(out, arm, test, [Answer(text=answer) for _ in test])
    record_arm(out, arm, {"answer": answer})


def run_arm(
    out: Path, arm: Arm, test_path: Path, shots: list[dict[str, Any]], options: EvalOptions
) -> dict[str, Any]:
    """Ask `arm.model` every test document through `options.target`; returns the eval report."""
    from lorafleet.adapters.training.evaluation import load_items

    test = read_jsonl(test_path)
    items = load_items(test_path)
    if arm.few_shot:
        items = [EvalItem(few_shot_messages(shots, i.messages), i.gold) for i in items]
    assert arm.model is not None
    opts = EvalOptions(
        target=options.target, model=arm.model, concurrency=options.concurrency,
        max_tokens=options.max_tokens, timeout_s=options.timeout_s,
        response_format=arm.response_format(),
    )  # fmt: skip
    report, answers = evaluate(items, opts)
    write_predictions(out, arm, test, answers)
    record_arm(out, arm, {
        "target": options.target, "temperature": 0, "max_tokens": options.max_tokens,
        "concurrency": options.concurrency, "wall_s": report["wall_s"],
        "shots": [s["meta"].get("source") for s in shots[: arm.few_shot]],
    })  # fmt: skip
    return report
