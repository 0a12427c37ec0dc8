# Russian court text is the point of this file: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001
"""Extraction metrics on hand-made cases."""

from __future__ import annotations

import json

import pytest

from lorafleet.adapters.training.metrics import latency_summary, parse_answer, score, values_match

GOLD = {
    "claimant": "ООО «Вектор»",
    "defendant": "Granit JSC",
    "dispute_subject": "lease",
    "claim_amount": 1250000,
    "outcome": "dismissed",
    "initiator": "defendant",
}


def answer(**changes: object) -> str:
    return json.dumps({**GOLD, **changes}, ensure_ascii=False)


def test_parse_strict_fenced_and_lenient() -> None:
    assert parse_answer('{"a": 1}').strict
    assert parse_answer('```json\n{"a": 1}\n```').strict
    lenient = parse_answer('Sure! Here it is: {"a": 1} Hope that helps.')
    assert lenient.value == {"a": 1} and not lenient.strict
    assert parse_answer("[1, 2]").value is None
    assert parse_answer("{broken").value is None
    assert parse_answer(None).value is None


@pytest.mark.parametrize(
    ("pred", "gold", "match"),
    [
        ("1 250 000", 1250000, True),
        (1250000.0, 1250000, True),
        ("1,250,000.00", 1250000, True),
        (1250001, 1250000, False),
        ("about a million", 1250000, False),
        ('ООО "Вектор"', "ООО «Вектор»", True),
        ("  granit  jsc. ", "Granit JSC", True),
        ("Granit", "Granit JSC", False),
        (None, None, True),
        ("", None, True),
        ("x", None, False),
    ],
)
def test_values_match(pred: object, gold: object, match: bool) -> None:
    assert values_match(pred, gold) is match


def test_perfect_answers() -> None:
    report = score([GOLD, GOLD], [answer(), answer()])
    assert report["json_valid_rate"] == 1.0
    assert report["exact_match_rate"] == 1.0
    assert report["initiator_accuracy"] == 1.0
    assert all(f["f1"] == 1.0 for f in report["fields"].values())


def test_wrong_missing_and_failed_answers() -> None:
    golds = [GOLD, GOLD, GOLD, GOLD]
    answers = [
        answer(),  # all right
        answer(claim_amount=84300, initiator="claimant"),  # distractor sum, wrong initiator
        'Result: {"claimant": "ООО «Вектор»"}',  # prose around partial JSON: not valid, but parsed
        None,  # the request failed
    ]
    report = score(golds, answers)
    amount = report["fields"]["claim_amount"]
    # tp=1; fp=1 (the distractor); fn=3 (distractor, missing, failed)
    assert amount["precision"] == 0.5
    assert amount["recall"] == 0.25
    assert amount["f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75, abs=1e-4)
    assert amount["accuracy"] == 0.25
    claimant = report["fields"]["claimant"]
    assert claimant["precision"] == 1.0 and claimant["recall"] == 0.75
    assert report["initiator_accuracy"] == 0.25
    assert report["json_valid_rate"] == 0.5
    assert report["json_object_found_rate"] == 0.75
    assert report["exact_match_rate"] == 0.25


def test_no_initiator_field_means_no_initiator_accuracy() -> None:
    assert score([{"a": 1}], ['{"a": 1}'])["initiator_accuracy"] is None


def test_answers_must_pair_with_golds() -> None:
    with pytest.raises(ValueError, match="one answer per gold"):
        score([GOLD], [])


def test_latency_summary() -> None:
    assert latency_summary([]) == {"mean": None, "p50": None, "p95": None}
    summary = latency_summary([float(i) for i in range(1, 101)])
    assert summary["p50"] == 50.5 and summary["p95"] == 95.0 and summary["mean"] == 50.5
