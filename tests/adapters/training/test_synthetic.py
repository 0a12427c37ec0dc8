# Russian court text is the point of this file: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001
"""The synthetic court-decision generator: deterministic, labelled, splits disjoint."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from lorafleet.adapters.training.amounts import FORMATS
from lorafleet.adapters.training.court_task import DISPUTE_SUBJECTS, OUTCOMES, SYSTEM_PROMPT
from lorafleet.adapters.training.synthetic import generate, main
from lorafleet.adapters.training.synthetic_templates import TEST_TEMPLATES, templates_for


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for out in ("a", "b"):
        assert (
            main(["--out", str(tmp_path / out), "--train", "30", "--valid", "5", "--test", "10"])
            == 0
        )
    for split in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (
            tmp_path / "b" / f"{split}.jsonl"
        ).read_bytes()
    assert generate(20, "train", seed=1) != generate(20, "train", seed=2)


def test_growing_train_does_not_change_test() -> None:
    assert generate(10, "test", 0) == generate(10, "test", 0)
    assert generate(50, "train", 0)[:10] == generate(10, "train", 0)


def test_test_templates_are_disjoint_from_train() -> None:
    train_ids = {t.id for t in templates_for("train")} | {t.id for t in templates_for("valid")}
    test_ids = {t.id for t in templates_for("test")}
    assert test_ids == TEST_TEMPLATES
    assert not train_ids & test_ids
    used_train = {e.template for e in generate(300, "train", 0)}
    used_test = {e.template for e in generate(100, "test", 0)}
    assert used_train <= train_ids and used_test <= test_ids
    # each split holds both languages and both kinds of proceedings
    for split in ("train", "test"):
        kinds = {(t.lang, t.kind) for t in templates_for(split)}
        assert kinds == {("ru", "first"), ("ru", "appeal"), ("en", "first"), ("en", "appeal")}


def test_records_are_chat_examples_with_gold_json(tmp_path: Path) -> None:
    main(["--out", str(tmp_path), "--train", "40", "--valid", "1", "--test", "1"])
    lines = (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()
    for line in lines:
        record = json.loads(line)
        system, user, assistant = record["messages"]
        assert system == {"role": "system", "content": SYSTEM_PROMPT}
        assert record["meta"]["synthetic"] is True
        label = json.loads(assistant["content"])
        assert set(label) == {
            "claimant",
            "defendant",
            "dispute_subject",
            "claim_amount",
            "outcome",
            "initiator",
        }
        assert label["dispute_subject"] in DISPUTE_SUBJECTS and label["outcome"] in OUTCOMES
        assert label["claimant"] in user["content"] and label["defendant"] in user["content"]
        assert isinstance(label["claim_amount"], int | float) and label["claim_amount"] >= 100_000


def test_variety_languages_initiators_and_distractors() -> None:
    examples = generate(400, "train", 0)
    assert Counter(e.lang for e in examples).keys() == {"ru", "en"}
    initiators = Counter(e.label.initiator for e in examples)
    assert initiators["defendant"] > 50 and initiators["claimant"] > 200
    distractors = sum(
        bool(re.search(r"неустойк|процент|Госпошлин|penalty|interest|State duty", e.text))
        for e in examples
    )
    assert distractors > 200
    styles = [
        r"\d \d{3} руб\.",
        r"млн руб\.",
        r"тыс\. руб\.",
        r"RUB \d{1,3},\d{3}",
        r"\d million rubles",
        r"\d,\d{3} rubles",
    ]
    for style in styles:
        assert any(re.search(style, e.text) for e in examples), style
    assert len(FORMATS) >= 10


def test_documents_stay_short() -> None:
    # ~0.8 tokens per Cyrillic character with the SmolLM2 tokenizer; keep CPU training cheap
    examples = generate(200, "train", 0)
    assert max(len(e.text) for e in examples) < 600
