"""Failover figures from request records and polled samples (no engines, no network)."""

from __future__ import annotations

import pytest

from lorafleet.benchmarks.failover import (
    FailoverRecord,
    Sample,
    Timeline,
    classify,
    completions_per_second,
    failures,
    parse_engine_ready,
    parse_success_total,
    phases,
    served_per_second,
    summarize,
    timeline,
)
from lorafleet.benchmarks.loadgen import RequestRecord

VICTIM, OTHER = "http://127.0.0.1:8101", "http://127.0.0.1:8102"

GATEWAY_METRICS = f"""\
# HELP lorafleet:engine_ready 1 when the engine replica answers its health check.
# TYPE lorafleet:engine_ready gauge
lorafleet:engine_ready{{base_model="smollm2-135m-instruct",engine="{VICTIM}"}} 0.0
lorafleet:engine_ready{{base_model="smollm2-135m-instruct",engine="{OTHER}"}} 1.0
lorafleet:requests_in_flight{{model="smollm2-135m-instruct"}} 3.0
"""

VLLM_METRICS = """\
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 12.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 3.0
vllm:request_success_created{engine="0",finished_reason="stop",model_name="m"} 1.7e9
vllm:num_requests_running{engine="0",model_name="m"} 2.0
"""


def test_parse_engine_ready() -> None:
    assert parse_engine_ready(GATEWAY_METRICS) == {VICTIM: False, OTHER: True}
    assert parse_engine_ready("") == {}


def test_parse_success_total_sums_every_finish_reason() -> None:
    assert parse_success_total(VLLM_METRICS) == 15.0
    assert parse_success_total("vllm:request_success_total 4.0\n") == 4.0
    assert parse_success_total("") == 0.0


@pytest.mark.parametrize(
    ("record", "expected", "outcome"),
    [
        (RequestRecord(chunks=4, output_tokens=4, usage_reported=True), 4, "ok"),
        (RequestRecord(error="HTTP 503: no engine"), 4, "error_before_first_byte"),
        (RequestRecord(error="ConnectError: refused"), 4, "error_before_first_byte"),
        (RequestRecord(chunks=2, error="stream error: {'message': 'x'}"), 4, "error_event"),
        (RequestRecord(chunks=0, error="stream error: {'message': 'x'}"), 4, "error_event"),
        (RequestRecord(chunks=2, error="RemoteProtocolError: peer closed"), 4, "truncated"),
        (RequestRecord(error="no token chunk received"), 4, "truncated"),
        (RequestRecord(chunks=2, output_tokens=2, usage_reported=False), 4, "truncated"),
        (RequestRecord(chunks=2, output_tokens=2, usage_reported=True), 4, "truncated"),
        (RequestRecord(chunks=2, output_tokens=2, usage_reported=True), None, "ok"),
    ],
)
def test_classify(record: RequestRecord, expected: int | None, outcome: str) -> None:
    record.success = not record.error
    assert classify(record, expected) == outcome


def samples_for_outage() -> list[Sample]:
    """Kill at 10 s; the gateway ejects at 10.5, the engine answers at 40, is marked healthy at
    42 and finishes its first request at 43. Polls every 0.5 s."""
    out = []
    for step in range(0, 120):
        t = step * 0.5
        ready = {VICTIM: not (10.5 <= t < 42.0), OTHER: True}
        if t < 10.0:
            served: float | None = 100.0 + t
        elif t < 40.0:
            served = None
        else:
            served = 0.0 if t < 43.0 else t - 42.0
        out.append(Sample(t, ready, {VICTIM: served, OTHER: 50.0 + 2 * t}))
    return out


def test_timeline_from_polls() -> None:
    line = timeline(samples_for_outage(), kill=10.0, victim=VICTIM)
    assert line == Timeline(kill=10.0, ejected=10.5, engine_up=40.0, healthy=42.0, serving=43.0)
    assert line.after_kill() == {
        "time_to_eject_s": 0.5,
        "time_to_engine_up_s": 30.0,
        "time_to_healthy_s": 32.0,
        "time_to_serving_s": 33.0,
    }


def test_timeline_with_events_never_seen() -> None:
    never_back = [
        Sample(t, {VICTIM: t < 11.0}, {VICTIM: None if t >= 10.0 else 5.0})
        for t in (9.0, 10.0, 11.0, 12.0)
    ]
    line = timeline(never_back, kill=10.0, victim=VICTIM)
    assert (line.ejected, line.engine_up, line.healthy, line.serving) == (11.0, None, None, None)
    assert line.after_kill()["time_to_serving_s"] is None
    # Polls that never answered for the victim say nothing, not "ejected".
    blind = [Sample(t, {}, {}) for t in (10.0, 11.0)]
    assert timeline(blind, kill=10.0, victim=VICTIM) == Timeline(kill=10.0)


def test_timeline_ignores_polls_before_the_kill() -> None:
    samples = [Sample(5.0, {VICTIM: False}, {VICTIM: None}), Sample(10.0, {VICTIM: True}, {})]
    assert timeline(samples, kill=10.0, victim=VICTIM).ejected is None


def rec(start: float, end: float, outcome: str = "ok") -> FailoverRecord:
    return FailoverRecord(
        start=start, end=end, outcome=outcome, error="" if outcome == "ok" else outcome
    )  # type: ignore[arg-type]


RECORDS = [
    rec(0.0, 5.0),
    rec(6.0, 9.0),
    rec(8.0, 12.0),  # in flight at the kill, on the survivor
    rec(9.0, 10.2, "error_event"),  # in flight at the kill, on the victim
    rec(9.5, 10.1, "error_event"),
    rec(9.6, 10.1, "truncated"),
    rec(9.9, 11.0, "error_before_first_byte"),  # in flight, not yet streaming, not retried
    rec(11.0, 14.0),
    rec(20.0, 25.0, "error_before_first_byte"),  # started after the kill
    rec(40.0, 45.0),
    rec(44.0, 50.0),
]


def test_failures_split_by_timing_and_outcome() -> None:
    result = failures(RECORDS, kill=10.0)
    assert result["by_timing_and_outcome"] == {
        "before the kill": {"error_before_first_byte": 0, "error_event": 0, "truncated": 0},
        "in flight at the kill": {"error_before_first_byte": 1, "error_event": 2, "truncated": 1},
        "started after the kill": {"error_before_first_byte": 1, "error_event": 0, "truncated": 0},
    }
    assert result["in_flight_at_kill"] == 5 and result["in_flight_at_kill_ok"] == 1
    assert result["streams_on_killed_replica_failed"] == 3
    assert result["streams_on_killed_replica_error_event"] == 2
    assert result["streams_on_killed_replica_truncated"] == 1
    assert result["not_yet_streaming_failed"] == 2
    assert result["failed_before_kill"] == 0
    assert result["errors"] == ["error_before_first_byte", "error_event", "truncated"]


def test_phases_by_end_time() -> None:
    line = Timeline(kill=10.0, ejected=10.5, healthy=42.0, serving=43.0)
    table = phases(RECORDS, line, end=50.0)
    assert {name: (row["completed"], row["failed"]) for name, row in table.items()} == {
        "before": (2, 0),
        "during": (2, 5),
        "after": (2, 0),
    }
    assert table["before"]["completed_per_s"] == pytest.approx(2 / 10.0)
    assert (table["after"]["from_s"], table["after"]["to_s"]) == (43.0, 50.0)
    # Never recovered: the outage lasts to the end of the run.
    never = phases(RECORDS, Timeline(kill=10.0), end=50.0)
    assert never["during"]["to_s"] == 50.0 and never["after"]["completed"] == 0


def test_completions_per_second() -> None:
    bins = completions_per_second(RECORDS, end=50.0)
    assert len(bins) == 50 and sum(bins) == 6
    assert bins[5] == bins[9] == bins[12] == bins[14] == bins[45] == 1
    assert completions_per_second([rec(0.0, 50.0)], end=50.0)[-1] == 1  # the last edge counts


def test_served_per_second_survives_a_restart() -> None:
    samples = [
        Sample(0.0, served={VICTIM: 10.0}),
        Sample(0.5, served={VICTIM: 12.0}),
        Sample(1.2, served={VICTIM: 14.0}),
        Sample(1.7, served={VICTIM: 15.0}),
        Sample(2.5, served={VICTIM: None}),  # down
        Sample(3.5, served={VICTIM: 0.0}),  # restarted
        Sample(4.5, served={VICTIM: 3.0}),
        Sample(5.5, served={VICTIM: 1.0}),  # restarted again between polls
    ]
    assert served_per_second(samples, VICTIM, end=6.0) == [2.0, 3.0, None, None, 3.0, 1.0]
    assert served_per_second(samples, OTHER, end=2.0) == [None, None]


def test_summarize_is_json_ready() -> None:
    import orjson

    summary = summarize(RECORDS, samples_for_outage(), kill=10.0, victim=VICTIM, end=50.0)
    assert summary["timeline"]["time_to_serving_s"] == 33.0
    assert summary["requests"] == len(RECORDS) and summary["completed"] == 6
    assert summary["failure_end_times_s"] == [10.1, 10.1, 10.2, 11.0, 25.0]
    orjson.dumps(summary)
