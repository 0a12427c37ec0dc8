# Russian court text is the point of this file: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001
"""Money amounts in the formats court documents and their translations use, and back.

`format_amount` writes kopecks (an int, so no float rounding) in one of the named styles;
`parse_amount` reads the numbers a model answers with (`1250000`, `"1 250 000"`,
`"1,250,000.00"`), used by the evaluation to compare amounts as numbers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_Formatter = Callable[[int], str]


def _group(rubles: int, sep: str) -> str:
    return f"{rubles:,}".replace(",", sep)


def _decimal_of(rubles: int, unit: int, comma: bool) -> str:
    whole, rest = divmod(rubles, unit)
    digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
    text = f"{whole}.{digits}" if digits else str(whole)
    return text.replace(".", ",") if comma else text


def _kop(kopecks: int, sep: str) -> str:
    return f"{sep}{kopecks % 100:02d}"


FORMATS: dict[str, _Formatter] = {
    # Russian styles
    "ru_space": lambda k: f"{_group(k // 100, ' ')} руб.",
    "ru_space_kop": lambda k: f"{_group(k // 100, ' ')}{_kop(k, ',')} руб.",
    "ru_rubley": lambda k: f"{_group(k // 100, ' ')} рублей",
    "ru_million": lambda k: f"{_decimal_of(k // 100, 1_000_000, comma=True)} млн руб.",
    "ru_thousand": lambda k: f"{_decimal_of(k // 100, 1_000, comma=True)} тыс. руб.",
    # English styles
    "en_rub_prefix": lambda k: f"RUB {_group(k // 100, ',')}",
    "en_rub_prefix_kop": lambda k: f"RUB {_group(k // 100, ',')}{_kop(k, '.')}",
    "en_rubles": lambda k: f"{_group(k // 100, ',')} rubles",
    "en_million": lambda k: f"{_decimal_of(k // 100, 1_000_000, comma=False)} million rubles",
    "en_rub_million": lambda k: f"RUB {_decimal_of(k // 100, 1_000_000, comma=False)} million",
    "en_space": lambda k: f"{_group(k // 100, ' ')} rubles",
}
_NEEDS_WHOLE_RUBLES = {"ru_space", "ru_rubley", "en_rub_prefix", "en_rubles", "en_space"}
_NEEDS_THOUSANDS = {"ru_million", "ru_thousand", "en_million", "en_rub_million"}
_MILLION_STYLES = {"ru_million", "en_million", "en_rub_million"}


def allowed_formats(kopecks: int, lang: str) -> list[str]:
    """Styles that write `kopecks` exactly, favouring the document's language."""
    rubles, cents = divmod(kopecks, 100)
    names = []
    for name in FORMATS:
        if cents and (name in _NEEDS_WHOLE_RUBLES or name in _NEEDS_THOUSANDS):
            continue
        if name in _NEEDS_THOUSANDS and rubles % 1000:
            continue
        if name in _MILLION_STYLES and rubles < 1_000_000:
            continue
        if name == "ru_thousand" and rubles >= 10_000_000:
            continue
        names.append(name)
    own = [n for n in names if n.startswith(lang)]
    return own or names


def format_amount(kopecks: int, lang: str, rng: random.Random) -> str:
    """`kopecks` in a style chosen by `rng`; one time in six a style of the other language."""
    options = allowed_formats(kopecks, lang)
    if rng.random() < 1 / 6:
        other = allowed_formats(kopecks, "en" if lang == "ru" else "ru")
        options = [n for n in other if not n.startswith(lang)] or options
    return FORMATS[rng.choice(options)](kopecks)


def random_claim_kopecks(rng: random.Random) -> int:
    """A claim between 100 thousand and 150 million rubles, rounded the way real claims are."""
    band = rng.random()
    if band < 0.4:
        rubles = rng.randint(100_000, 999_999)
    elif band < 0.85:
        rubles = rng.randint(1_000_000, 20_000_000)
    else:
        rubles = rng.randint(20_000_000, 150_000_000)
    rounding = rng.random()
    if rounding < 0.5:
        return (rubles // 10_000) * 10_000 * 100
    if rounding < 0.8:
        return (rubles // 1_000) * 1_000 * 100
    if rounding < 0.9:
        return rubles * 100
    return rubles * 100 + rng.randint(1, 99)


_NUMBER = re.compile(r"^[+-]?\d[\d\s\u00a0\u202f,._']*$")


def parse_amount(value: object) -> float | None:
    """A number from a model's answer: 1250000, "1 250 000", "1,250,000.00", "1.250.000,5"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not _NUMBER.match(text):
        return None
    text = re.sub(r"[\s\u00a0\u202f_']", "", text)
    return _parse_separators(text)


def _parse_separators(text: str) -> float | None:
    # The last separator followed by 1-2 digits is the decimal mark; every other one groups.
    match = re.search(r"[.,](\d{1,2})$", text)
    if match:
        whole = re.sub(r"[.,]", "", text[: match.start()])
        text = f"{whole}.{match.group(1)}"
    else:
        text = re.sub(r"[.,]", "", text)
    try:
        return float(text)
    except ValueError:
        return None


def amounts_equal(predicted: float | None, gold: float | None) -> bool:
    """Equal to the kopeck."""
    if predicted is None or gold is None:
        return predicted is gold
    return abs(predicted - gold) < 0.005
