"""Comparisons report the median of per-repeat ratios, never a ratio of medians."""

from __future__ import annotations

import pytest

from lorafleet.benchmarks.scenarios.arms import Arm, Workload, compare, headline_row
from lorafleet.benchmarks.stats import paired

WORKLOAD = Workload(num_requests=4)


def _arm(name: str, values: list[float]) -> Arm:
    arm = Arm(name, "http://127.0.0.1:1", "m", WORKLOAD)
    arm.runs = [{"output_throughput": value} for value in values]
    return arm


def test_value_is_the_median_of_per_repeat_ratios() -> None:
    # A ratio of medians would pair A's best (120) with B's median (100): 1.2, which no repeat
    # showed. Per repeat: 0.8, 1.2, 0.9 -> median 0.9.
    result = paired(
        [{"t": 80.0}, {"t": 120.0}, {"t": 90.0}],
        [{"t": 100.0}, {"t": 100.0}, {"t": 100.0}],
        "t",
        "ratio",
    )
    assert result["per_repeat"] == pytest.approx([0.8, 1.2, 0.9])
    assert result["value"] == pytest.approx(0.9)
    assert (result["min"], result["max"]) == (pytest.approx(0.8), pytest.approx(1.2))


def test_the_flattering_case_from_the_issue() -> None:
    # Per-repeat ratios whose median sits under a bar the ratio of medians would meet.
    ratios = [0.92, 0.99, 0.87, 0.95, 0.90]
    base = [1.0, 0.95, 1.0, 1.05, 1.0]
    scaled = [ratio * b for ratio, b in zip(ratios, base, strict=True)]
    comparison = compare(
        "mixed / one",
        _arm("a", scaled),
        _arm("b", base),
        "output_throughput",
        bar=">= 0.93",
        passes=lambda v: v >= 0.93,
    )
    assert comparison["value"] == pytest.approx(0.92)
    assert comparison["meets_bar"] is False
    assert comparison["repeats_meeting_bar"] == 2
    row = headline_row("mixed / one", comparison, "x", "w")
    assert (row["repeats"], row["repeats_meeting_bar"]) == (5, 2)


def test_deltas_and_unpaired_arms() -> None:
    delta = paired([{"t": 5.0}, {"t": 9.0}], [{"t": 4.0}, {"t": 4.0}], "t", "delta")
    assert delta["value"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="unpaired"):
        paired([{"t": 1.0}], [{"t": 1.0}, {"t": 2.0}], "t", "ratio")
