"""Metric math against values computed by hand (and numpy's definitions)."""

from __future__ import annotations

import pytest

from lorafleet.benchmarks.loadgen import RequestRecord
from lorafleet.benchmarks.metrics import (
    compute_metrics,
    meets_slos,
    parse_goodput,
    peak_output_rate,
    percentile,
    std,
    tpot,
)


def record(
    ttft: float, itl: list[float], tokens: int, start: float = 0.0, prompt: int = 10
) -> RequestRecord:
    return RequestRecord(
        success=True,
        ttft=ttft,
        itl=itl,
        latency=ttft + sum(itl),
        output_tokens=tokens,
        prompt_len=prompt,
        start_time=start,
        chunks=len(itl) + 1,
        usage_reported=True,
    )


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),  # numpy: (n-1)*p = 1.5 -> halfway between 2 and 3
        ([1.0, 2.0, 3.0, 4.0], 90, 3.7),  # 2.7 -> 3 + 0.7
        ([1.0, 2.0, 3.0, 4.0], 99, 3.97),
        ([5.0], 99, 5.0),
        ([], 50, 0.0),
        ([10.0, 0.0, 5.0], 0, 0.0),
        ([10.0, 0.0, 5.0], 100, 10.0),
    ],
)
def test_percentile_matches_numpy_linear(values: list[float], pct: float, expected: float) -> None:
    assert percentile(values, pct) == pytest.approx(expected)


def test_std_is_population() -> None:
    assert std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(2.0)


def test_tpot_excludes_first_token() -> None:
    # TTFT 100 ms, then 3 gaps of 20 ms: latency 160 ms, 4 tokens -> (160-100)/3 = 20 ms
    assert tpot(record(0.1, [0.02, 0.02, 0.02], 4)) == pytest.approx(0.02)
    assert tpot(record(0.1, [], 1)) == 0.0


def test_tpot_uses_server_token_count_not_chunks() -> None:
    # 2 chunks but the server says 5 tokens: (0.1+0.08-0.1)/(5-1) = 20 ms
    assert tpot(record(0.1, [0.08], 5)) == pytest.approx(0.02)


def test_compute_metrics_by_hand() -> None:
    records = [
        record(0.100, [0.010, 0.030], 3, start=0.0, prompt=10),  # latency .14, tpot .02
        record(0.300, [0.020, 0.020], 3, start=0.5, prompt=20),  # latency .34, tpot .02
        RequestRecord(success=False, error="HTTP 500"),
    ]
    m = compute_metrics(records, duration=2.0, percentiles=(50, 99), goodput_slos_ms={"ttft": 200})
    assert m["completed"] == 2 and m["failed"] == 1
    assert m["total_input_tokens"] == 30 and m["total_output_tokens"] == 6
    assert m["request_throughput"] == pytest.approx(1.0)
    assert m["output_throughput"] == pytest.approx(3.0)
    assert m["total_token_throughput"] == pytest.approx(18.0)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_ttft_ms"] == pytest.approx(200.0)
    assert m["p99_ttft_ms"] == pytest.approx(100 + 0.99 * 200)
    assert m["std_ttft_ms"] == pytest.approx(100.0)
    assert m["mean_tpot_ms"] == pytest.approx(20.0)
    # ITL pools every gap: [10, 30, 20, 20] ms
    assert m["mean_itl_ms"] == pytest.approx(20.0)
    assert m["median_itl_ms"] == pytest.approx(20.0)
    assert m["p99_itl_ms"] == pytest.approx(20 + 0.97 * 10)
    assert m["mean_e2el_ms"] == pytest.approx(240.0)
    assert m["request_goodput"] == pytest.approx(0.5)  # only the first meets ttft <= 200 ms
    assert m["mean_chunks_per_request"] == pytest.approx(3.0)


def test_goodput_none_without_slos() -> None:
    assert compute_metrics([record(0.1, [0.01], 2)], 1.0)["request_goodput"] is None


def test_compute_metrics_all_failed_is_zero_not_error() -> None:
    m = compute_metrics([RequestRecord(error="x")], 1.0)
    assert m["completed"] == 0 and m["mean_ttft_ms"] == 0.0 and m["max_output_tokens_per_s"] == 0.0


@pytest.mark.parametrize(
    ("slos", "good"),
    [
        ({"ttft": 500}, True),
        ({"ttft": 499}, False),
        ({"tpot": 250}, True),
        ({"tpot": 249}, False),
        ({"e2el": 1000}, True),
        ({"e2el": 999}, False),
        ({"ttft": 500, "tpot": 250, "e2el": 1000}, True),
    ],
)
def test_meets_slos_each_bound(slos: dict[str, float], good: bool) -> None:
    # binary-exact times: TTFT 0.5 s, gaps 0.25 s, E2EL 1.0 s, TPOT 0.25 s
    assert meets_slos(record(0.5, [0.25, 0.25], 3), slos) is good


def test_single_token_request_has_zero_tpot_for_goodput() -> None:
    assert meets_slos(record(0.1, [], 1), {"tpot": 0.0})


def test_parse_goodput_forms() -> None:
    assert parse_goodput(["ttft:500 tpot:50"]) == {"ttft": 500.0, "tpot": 50.0}
    assert parse_goodput(["ttft:500", "e2el:2000"]) == {"ttft": 500.0, "e2el": 2000.0}
    assert parse_goodput(["ttft:1,tpot:2"]) == {"ttft": 1.0, "tpot": 2.0}


@pytest.mark.parametrize("bad", ["ttft", "itl:5", "ttft:abc", "ttft:-1"])
def test_parse_goodput_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="SLO"):
        parse_goodput([bad])


def test_peak_output_rate_buckets_by_second() -> None:
    # request A: tokens at 0.1, 0.2, 0.3; request B starts at 1.0: tokens at 1.5, 1.6
    records = [record(0.1, [0.1, 0.1], 3, start=0.0), record(0.5, [0.1], 2, start=1.0)]
    peak, active = peak_output_rate(records)
    assert peak == 3.0
    assert active == 1  # A lives in second 0, B in second 1
    records[1].start_time = 0.2  # now both live in second 0
    assert peak_output_rate(records)[1] == 2
