"""Where an extraction model still misses the claim amount: per test template, with examples.

Reads the eval dataset (its `meta.template` / `meta.lang`, written by `synthetic`) and the
answers file the demo saves (one `{"answer", "error"}` line per example, in dataset order).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from lorafleet.adapters.training.metrics import parse_answer, values_match


def amount_section(dataset: Path, answers: Path, examples: int = 4) -> str:
    """A Markdown section: amount accuracy per template, then a few misses with their text."""
    records = [
        json.loads(line) for line in dataset.read_text(encoding="utf-8").splitlines() if line
    ]
    replies = [
        json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines() if line
    ]
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    misses: list[str] = []
    for record, reply in zip(records, replies, strict=True):
        gold = json.loads(record["messages"][-1]["content"])["claim_amount"]
        predicted = (parse_answer(reply.get("answer")).value or {}).get("claim_amount")
        template = record.get("meta", {}).get("template", "?")
        totals[template] += 1
        if values_match(predicted, gold):
            hits[template] += 1
        elif len(misses) < examples:
            text = record["messages"][-2]["content"]
            misses.append(f"- gold `{gold}`, answered `{predicted}`: {text[:150]}...")
    rows = "\n".join(f"| `{t}` | {hits[t]} / {totals[t]} |" for t in sorted(totals))
    return (
        "### Claim amount by test template (adapter)\n\n"
        "| template (never seen in training) | amount correct |\n|---|---:|\n"
        f"{rows}\n\nFirst misses:\n\n" + "\n".join(misses) + "\n"
    )
