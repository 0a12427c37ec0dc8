# Russian court text is the point of this file: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001, RUF002
"""Synthetic Russian arbitration court decisions, labelled for JSON extraction.

THE DATA IS SYNTHETIC. Every decision, party and sum is generated from templates and random
choices; none comes from a real case. It exists to reproduce, at the scale a CPU allows, the
shape of a real task (decision text -> JSON with parties, dispute subject, claim amount,
outcome, initiator) and to give base and fine-tuned models a measurable, held-out test.

What makes it non-trivial: amounts in several styles (`1 250 000 руб.`, `1,25 млн руб.`,
`1.25 million rubles`, `RUB 1,250,000`, with kopecks), distractor sums (penalty, interest,
state duty, legal fees, the sum awarded when a claim is partly granted), Russian and English
texts, first-instance decisions and appeals by either party, and test templates that never
appear in training.

    python -m lorafleet.adapters.training.synthetic --out data/court --train 800 --test 120
    # -> data/court/train.jsonl, valid.jsonl, test.jsonl (chat `messages`, gold JSON last)

Generation is deterministic: the same `--seed` and sizes give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorafleet.adapters.training import synthetic_phrases as phrases
from lorafleet.adapters.training.amounts import format_amount, random_claim_kopecks
from lorafleet.adapters.training.court_task import (
    DISPUTE_SUBJECTS,
    OUTCOMES,
    SYSTEM_PROMPT,
    CourtLabel,
    Party,
)
from lorafleet.adapters.training.synthetic_templates import Template, templates_for


@dataclass(frozen=True)
class Example:
    text: str
    label: CourtLabel
    template: str
    lang: str

    def to_record(self) -> dict[str, Any]:
        """One JSONL line: chat messages ending in the gold answer, plus provenance."""
        return {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": self.text},
                {"role": "assistant", "content": self.label.to_json()},
            ],
            "meta": {"synthetic": True, "template": self.template, "lang": self.lang},
        }


def generate(n: int, split: str, seed: int) -> list[Example]:
    """`n` examples of `split` ("train", "valid" or "test"); the same arguments, the same list."""
    # A separate stream per split: growing the train split never changes the test split.
    rng = random.Random(f"lorafleet-court/{split}/{seed}")
    templates = templates_for(split)
    by_kind = [[t for t in templates if t.kind == kind] for kind in ("first", "appeal")]
    # Half first-instance, half appeals (by either party): the initiator is then 3:1 claimant.
    return [_example(rng, rng.choice(rng.choice(by_kind))) for _ in range(n)]


def _example(rng: random.Random, template: Template) -> Example:
    lang = template.lang
    claimant, defendant = phrases.two_companies(rng)
    subject = rng.choice(DISPUTE_SUBJECTS)
    outcome = rng.choice(OUTCOMES)
    initiator: Party = (
        "claimant" if template.kind == "first" else rng.choice(("claimant", "defendant"))
    )
    kopecks = random_claim_kopecks(rng)
    fields = {
        "C": getattr(claimant, lang),
        "D": getattr(defendant, lang),
        "court": rng.choice(phrases.COURTS[lang]),
        "appeal_court": rng.choice(phrases.APPEAL_COURTS[lang]),
        "amount": format_amount(kopecks, lang, rng),
        "subject": rng.choice(phrases.SUBJECTS[lang][subject]),
        "extras": _extras(rng, lang, kopecks),
        "tail": _tail(rng, lang, kopecks),
        "outcome": _outcome_now(rng, lang, outcome, kopecks),
        "outcome_past": rng.choice(phrases.OUTCOME_PAST[lang][outcome]),
        "role_gen": phrases.ROLE_GENITIVE[initiator],
        "role_nom": phrases.ROLE_NOMINATIVE[initiator],
        "role_instr": phrases.ROLE_INSTRUMENTAL[initiator],
        "role_en": initiator,
        "case": f"{'А' if lang == 'ru' else 'A'}{rng.randint(10, 83)}-{rng.randint(1000, 99999)}"
        f"/{rng.randint(2021, 2025)}",
    }
    text = _tidy(template.text.format(**fields))
    label = CourtLabel(
        claimant=fields["C"],
        defendant=fields["D"],
        dispute_subject=subject,
        claim_amount=kopecks / 100,
        outcome=outcome,
        initiator=initiator,
    )
    return Example(text=text, label=label, template=template.id, lang=lang)


def _tidy(text: str) -> str:
    """Punctuation the templates produce around abbreviations and capitalised court names."""
    text = text.replace("руб..", "руб.")
    text = re.sub(r"(?<=\()The |(?<=; )The ", "the ", text)
    return text[0].upper() + text[1:]


def _fraction(rng: random.Random, kopecks: int, low: float, high: float) -> int:
    """A distractor sum: a share of the claim, rounded to whole rubles (kopecks int)."""
    rubles = max(1_000, round(kopecks / 100 * rng.uniform(low, high)))
    return rubles * 100


def _extras(rng: random.Random, lang: str, kopecks: int) -> str:
    """Sums claimed beside the principal (penalty, interest): never the claim amount."""
    parts: list[str] = []
    if rng.random() < 0.6:
        # One penalty in seven is larger than the principal, so "largest number" is no rule.
        big = rng.random() < 1 / 7
        penalty = _fraction(rng, kopecks, 1.05, 1.6) if big else _fraction(rng, kopecks, 0.01, 0.2)
        text = format_amount(penalty, lang, rng)
        parts.append(f"{text} неустойки" if lang == "ru" else f"a penalty of {text}")
    if rng.random() < 0.35:
        text = format_amount(_fraction(rng, kopecks, 0.01, 0.12), lang, rng)
        parts.append(f"{text} процентов" if lang == "ru" else f"interest of {text}")
    if not parts:
        return ""
    joiner = ", а также " if lang == "ru" else ", plus "
    return joiner + (" и " if lang == "ru" else " and ").join(parts)


def _tail(rng: random.Random, lang: str, kopecks: int) -> str:
    """An optional closing sentence with state duty or legal fees."""
    roll = rng.random()
    if roll < 0.3:
        duty = format_amount(min(20_000_000, max(400_000, kopecks // 50)), lang, rng)
        return (
            f" Госпошлина {duty} отнесена на ответчика."
            if lang == "ru"
            else (f" State duty of {duty} is charged to the defendant.")
        )
    if roll < 0.45:
        fees = format_amount(rng.randint(20, 300) * 1_000 * 100, lang, rng)
        return f" Расходы на представителя: {fees}." if lang == "ru" else f" Legal fees: {fees}."
    return ""


def _outcome_now(rng: random.Random, lang: str, outcome: str, kopecks: int) -> str:
    """The operative words; a partly granted claim often names the (smaller) sum awarded."""
    text = rng.choice(phrases.OUTCOME_NOW[lang][outcome])  # type: ignore[index]
    if outcome == "partially_satisfied" and rng.random() < 0.5:
        awarded = format_amount(_fraction(rng, kopecks, 0.3, 0.9), lang, rng)
        text += f", взыскать {awarded}" if lang == "ru" else f", {awarded} awarded"
    return text


def write_jsonl(path: Path, examples: Sequence[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(example.to_record(), ensure_ascii=False) + "\n")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lorafleet.adapters.training.synthetic",
        description="Write the SYNTHETIC court-decision extraction dataset (train/valid/test).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--train", type=int, default=800, help="training examples")
    parser.add_argument(
        "--valid", type=int, default=32, help="validation examples (train templates)"
    )
    parser.add_argument("--test", type=int, default=120, help="test examples (held-out templates)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    for split, n in (("train", args.train), ("valid", args.valid), ("test", args.test)):
        path = args.out / f"{split}.jsonl"
        write_jsonl(path, generate(n, split, args.seed))
        print(f"{path}: {n} synthetic examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
