# Russian court text is the point of this file: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001
"""Extraction metrics: JSON validity, per-field precision/recall/F1, accuracy. Pure functions.

Per field and example, with `pred` the model's value and `gold` the label:
- a match is counted as a true positive (when gold has a value);
- a predicted value that does not match is a false positive, and also a false negative when
  gold has a value (slot-filling convention: a wrong value is both);
- a missing or null prediction where gold has a value is a false negative.
Numbers are compared as numbers (gold `1250000` matches `1250000.0` and `"1 250 000"`, to the
kopeck); strings after case folding, whitespace collapsing and quote normalisation.

`json_valid`: the whole answer (optionally in a ```json fence) is one JSON object. Fields are
read leniently, from the first JSON object anywhere in the answer, so a model that wraps valid
JSON in prose is scored on its fields but not counted as valid.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lorafleet.adapters.training.amounts import amounts_equal, parse_amount

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_QUOTES = str.maketrans({"«": '"', "»": '"', "“": '"', "”": '"', "„": '"', "ё": "е"})


@dataclass(frozen=True)
class Parsed:
    value: dict[str, Any] | None  # the first JSON object found, if any
    strict: bool  # the whole answer is that object


def parse_answer(text: str | None) -> Parsed:
    if not text:
        return Parsed(None, False)
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        whole = json.loads(body)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return Parsed(whole, True)
    return Parsed(_first_object(body), False)


def _first_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def normalize_text(value: Any) -> str:
    text = str(value).translate(_QUOTES).casefold()
    return " ".join(text.replace('"', " ").split()).strip(" .,;")


def values_match(pred: Any, gold: Any) -> bool:
    if _absent(gold):
        return _absent(pred)
    if _absent(pred):
        return False
    if isinstance(gold, int | float) and not isinstance(gold, bool):
        return amounts_equal(parse_amount(pred), float(gold))
    return normalize_text(pred) == normalize_text(gold)


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@dataclass
class FieldCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    correct: int = 0
    total: int = 0

    def add(self, pred: Any, gold: Any) -> None:
        match = values_match(pred, gold)
        self.total += 1
        self.correct += match
        if match and not _absent(gold):
            self.tp += 1
        if not match and not _absent(pred):
            self.fp += 1
        if not match and not _absent(gold):
            self.fn += 1

    def summary(self) -> dict[str, float]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        accuracy = self.correct / self.total if self.total else 0.0
        return {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "accuracy": round(accuracy, 4),
        }


def score(golds: Sequence[dict[str, Any]], answers: Sequence[str | None]) -> dict[str, Any]:
    """Scores for answers (None: the request failed) against gold objects, field by field."""
    if len(golds) != len(answers):
        raise ValueError("one answer per gold label")
    names = sorted({key for gold in golds for key in gold})
    counts = {name: FieldCounts() for name in names}
    valid = parsed = 0
    for gold, answer in zip(golds, answers, strict=True):
        result = parse_answer(answer)
        valid += result.strict
        parsed += result.value is not None
        predicted = result.value or {}
        for name in names:
            counts[name].add(predicted.get(name), gold.get(name))
    n = len(golds)
    fields = {name: c.summary() for name, c in counts.items()}
    return {
        "examples": n,
        "json_valid_rate": round(valid / n, 4) if n else 0.0,
        "json_object_found_rate": round(parsed / n, 4) if n else 0.0,
        "fields": fields,
        "exact_match_rate": round(_exact(golds, answers) / n, 4) if n else 0.0,
        "initiator_accuracy": fields["initiator"]["accuracy"] if "initiator" in fields else None,
    }


def _exact(golds: Sequence[dict[str, Any]], answers: Sequence[str | None]) -> int:
    hits = 0
    for gold, answer in zip(golds, answers, strict=True):
        predicted = parse_answer(answer).value or {}
        hits += all(values_match(predicted.get(k), v) for k, v in gold.items())
    return hits


def latency_summary(latencies: Sequence[float]) -> dict[str, float | None]:
    if not latencies:
        return {"mean": None, "p50": None, "p95": None}
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "mean": round(statistics.fmean(ordered), 4),
        "p50": round(statistics.median(ordered), 4),
        "p95": round(p95, 4),
    }
