# Russian court text is the point of this file: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001
"""Amount formatting and parsing round trips."""

from __future__ import annotations

import random

import pytest

from lorafleet.adapters.training.amounts import (
    FORMATS,
    allowed_formats,
    amounts_equal,
    format_amount,
    parse_amount,
    random_claim_kopecks,
)


@pytest.mark.parametrize(
    ("style", "kopecks", "text"),
    [
        ("ru_space", 125_000_000, "1 250 000 руб."),
        ("ru_space_kop", 125_000_050, "1 250 000,50 руб."),
        ("ru_million", 125_000_000, "1,25 млн руб."),
        ("ru_thousand", 48_700_000, "487 тыс. руб."),
        ("en_rub_prefix", 125_000_000, "RUB 1,250,000"),
        ("en_million", 125_000_000, "1.25 million rubles"),
        ("en_rub_million", 300_000_000, "RUB 3 million"),
        ("en_rub_prefix_kop", 12_345_678, "RUB 123,456.78"),
    ],
)
def test_styles(style: str, kopecks: int, text: str) -> None:
    assert FORMATS[style](kopecks) == text


def test_only_exact_styles_are_offered() -> None:
    assert allowed_formats(125_000_050, "ru") == ["ru_space_kop"]  # kopecks: no rounding styles
    assert "ru_million" not in allowed_formats(50_000_000, "ru")  # 500 000: under a million
    assert "en_million" in allowed_formats(125_500_000, "en")  # 1.255 million is exact


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        (1250000, 1_250_000.0),
        ("1250000", 1_250_000.0),
        ("1 250 000", 1_250_000.0),
        ("1,250,000.00", 1_250_000.0),
        ("1.250.000,50", 1_250_000.5),
        ("1 250 000,5", 1_250_000.5),
        ("1.25 million", None),
        (True, None),
        (None, None),
        ("", None),
    ],
)
def test_parse_amount(answer: object, value: float | None) -> None:
    assert parse_amount(answer) == value


def test_amounts_equal_to_the_kopeck() -> None:
    assert amounts_equal(1_250_000.0, 1_250_000.004)
    assert not amounts_equal(1_250_000.0, 1_250_000.01)
    assert not amounts_equal(None, 1.0)


def test_generated_claims_parse_back() -> None:
    rng = random.Random(0)
    for _ in range(300):
        kopecks = random_claim_kopecks(rng)
        text = format_amount(kopecks, rng.choice(["ru", "en"]), rng)
        assert text  # every claim has at least one exact style
        digits = parse_amount(text.split(" руб")[0].split(" rub")[0].removeprefix("RUB "))
        if digits is not None and "млн" not in text and "million" not in text and "тыс" not in text:
            assert amounts_equal(digits, kopecks / 100), text
