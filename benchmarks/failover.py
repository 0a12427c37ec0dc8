"""Failover figures from what a load run saw: pure functions, no I/O (the `fleet` scenario
collects the inputs; tests feed them by hand).

Inputs, all on one clock (seconds from the start of the load):
- `FailoverRecord`s: one per request, with its start and end and an `Outcome`;
- `Sample`s: polls of the gateway's `lorafleet:engine_ready{engine=URL}` gauge and of each
  engine's own `vllm:request_success_total` counter (None where the poll got no answer);
- the moment one engine was killed.

Outputs: the `Timeline` (killed -> ejected by the gateway -> engine answering again -> marked
healthy -> serving requests again), requests completed and failed before, during and after the
outage, failures split by when they started and how they ended, and 1-second throughput bins.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lorafleet.benchmarks.loadgen import RequestRecord

Outcome = Literal["ok", "error_before_first_byte", "error_event", "truncated"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "error_before_first_byte", "error_event", "truncated")
TIMINGS = ("before the kill", "in flight at the kill", "started after the kill")

_ENGINE_READY = re.compile(r'^lorafleet:engine_ready\{[^}]*engine="([^"]+)"[^}]*\}\s+(\S+)', re.M)


@dataclass(frozen=True)
class FailoverRecord:
    start: float
    end: float
    outcome: Outcome
    chunks: int = 0
    output_tokens: int = 0
    error: str = ""


@dataclass(frozen=True)
class Sample:
    t: float
    ready: dict[str, bool] = field(default_factory=dict)  # gateway's view, by engine URL
    served: dict[str, float | None] = field(default_factory=dict)  # engine counters, by URL


@dataclass(frozen=True)
class Timeline:
    kill: float
    ejected: float | None = None  # the gateway's engine_ready for the victim turned 0
    engine_up: float | None = None  # the restarted engine answered /metrics again
    healthy: float | None = None  # the gateway's engine_ready turned 1 again
    serving: float | None = None  # the restarted engine finished a request

    def after_kill(self) -> dict[str, float | None]:
        """Seconds from the kill to each event (None: not seen during the run)."""
        return {
            "time_to_eject_s": _since(self.ejected, self.kill),
            "time_to_engine_up_s": _since(self.engine_up, self.kill),
            "time_to_healthy_s": _since(self.healthy, self.kill),
            "time_to_serving_s": _since(self.serving, self.kill),
        }

    def as_dict(self) -> dict[str, float | None]:
        return {**asdict(self), **self.after_kill()}


def _since(moment: float | None, origin: float) -> float | None:
    return None if moment is None else moment - origin


# --- classifying requests -----------------------------------------------------------------
def classify(record: RequestRecord, expected_tokens: int | None = None) -> Outcome:
    """How a streamed request ended, from the load generator's record.

    - `error_before_first_byte`: an HTTP error status, or the connection failed before any
      token chunk (nothing was streamed, so the gateway could still have retried it);
    - `error_event`: the stream carried an `error` event (the gateway's way of ending a stream
      whose engine broke after the status line was sent);
    - `truncated`: the stream stopped early without one: the connection broke after tokens had
      arrived, or it ended without usage or with fewer tokens than asked for;
    - `ok`: everything else.
    """
    error = record.error
    if error.startswith("HTTP "):
        return "error_before_first_byte"
    if error.startswith("stream error"):
        return "error_event"
    if error == "no token chunk received":
        return "truncated"
    if error:
        return "truncated" if record.chunks else "error_before_first_byte"
    if not record.usage_reported:
        return "truncated"
    if expected_tokens and record.output_tokens < expected_tokens:
        return "truncated"
    return "ok"


def timing(record: FailoverRecord, kill: float) -> str:
    if record.end < kill:
        return TIMINGS[0]
    if record.start < kill:
        return TIMINGS[1]
    return TIMINGS[2]


# --- parsing the polled metrics -------------------------------------------------------------
def parse_engine_ready(text: str) -> dict[str, bool]:
    """`lorafleet:engine_ready{base_model=...,engine=URL} 1.0` lines -> {URL: ready}."""
    return {url: float(value) >= 0.5 for url, value in _ENGINE_READY.findall(text)}


def parse_success_total(text: str) -> float:
    """Requests an engine finished: the sum of vLLM's `vllm:request_success_total` series."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total{") or line.startswith(
            "vllm:request_success_total "
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the timeline ---------------------------------------------------------------------------
def timeline(samples: Sequence[Sample], kill: float, victim: str) -> Timeline:
    """The outage as the polls saw it, each moment the first poll after the previous one that
    shows it. The restarted engine counts as up once a poll reads its metrics after one that
    could not (its counters start again from 0), and as serving once that counter is above 0."""
    after = [s for s in samples if s.t >= kill]
    ejected = _first(after, lambda s: s.ready.get(victim) is False)
    healthy = _first(after, lambda s: s.ready.get(victim) is True, ejected)
    down = _first(after, lambda s: s.served.get(victim) is None)
    engine_up = _first(after, lambda s: s.served.get(victim) is not None, down)
    serving = _first(after, lambda s: (s.served.get(victim) or 0.0) > 0.0, engine_up)
    return Timeline(kill, ejected, engine_up, healthy, serving)


def _first(
    samples: Sequence[Sample], test: Callable[[Sample], bool], since: float | None = -math.inf
) -> float | None:
    """The time of the first sample at or after `since` that passes `test`; None when there is
    none, or when `since` is None (the event it waits for was never seen)."""
    if since is None:
        return None
    return next((s.t for s in samples if s.t >= since and test(s)), None)


# --- what the clients saw -------------------------------------------------------------------
def phases(records: Sequence[FailoverRecord], line: Timeline, end: float) -> dict[str, Any]:
    """Requests completed and failed, by when they ended: before the kill, during the outage
    (until the restarted replica serves again; the end of the run if it never did), after."""
    recovered = line.serving if line.serving is not None else math.inf
    bounds = {
        "before": (-math.inf, line.kill),
        "during": (line.kill, recovered),
        "after": (recovered, math.inf),
    }
    table: dict[str, Any] = {}
    for name, (low, high) in bounds.items():
        inside = [r for r in records if low <= r.end < high]
        ok = sum(r.outcome == "ok" for r in inside)
        low, high = min(max(low, 0.0), end), min(high, end)
        table[name] = {
            "from_s": low,
            "to_s": high,
            "completed": ok,
            "failed": len(inside) - ok,
            "completed_per_s": ok / (high - low) if high > low else None,
        }
    return table


def failures(records: Sequence[FailoverRecord], kill: float) -> dict[str, Any]:
    """Failed requests by when they started (TIMINGS) and how they ended, plus the two figures
    the design promises: streams already running on the killed replica end with an error event;
    requests not yet streaming are retried on another replica and do not fail."""
    failed = [r for r in records if r.outcome != "ok"]
    table = {when: dict.fromkeys(OUTCOMES[1:], 0) for when in TIMINGS}
    for record in failed:
        table[timing(record, kill)][record.outcome] += 1
    in_flight = table[TIMINGS[1]]
    streaming = in_flight["error_event"] + in_flight["truncated"]
    not_streaming = in_flight["error_before_first_byte"] + sum(table[TIMINGS[2]].values())
    was_in_flight = [r for r in records if timing(r, kill) == TIMINGS[1]]
    return {
        "by_timing_and_outcome": table,
        "in_flight_at_kill": len(was_in_flight),
        "in_flight_at_kill_ok": sum(r.outcome == "ok" for r in was_in_flight),
        "streams_on_killed_replica_failed": streaming,
        "streams_on_killed_replica_error_event": in_flight["error_event"],
        "streams_on_killed_replica_truncated": in_flight["truncated"],
        "not_yet_streaming_failed": not_streaming,
        "failed_before_kill": sum(table[TIMINGS[0]].values()),
        "errors": sorted({r.error[:200] for r in failed}),
    }


def completions_per_second(records: Iterable[FailoverRecord], end: float) -> list[int]:
    """Requests completed successfully in each 1-second bin [i, i+1) of the run."""
    bins = [0] * max(1, math.ceil(end))
    for record in records:
        if record.outcome == "ok" and record.end >= 0:
            bins[min(int(record.end), len(bins) - 1)] += 1
    return bins


def served_per_second(samples: Sequence[Sample], url: str, end: float) -> list[float | None]:
    """Requests one engine finished in each 1-second bin, from its own counter: each increase
    between consecutive readable polls lands in the bin of the later poll; None for bins with no
    such pair (the engine was down). A counter that went down was restarted: it counts from 0."""
    bins: list[float | None] = [None] * max(1, math.ceil(end))
    previous: float | None = None
    for sample in samples:
        value = sample.served.get(url)
        if value is None:
            previous = None
            continue
        index = min(int(sample.t), len(bins) - 1)
        if previous is not None:
            bins[index] = (bins[index] or 0.0) + (value - previous if value >= previous else value)
        previous = value
    return bins


def summarize(
    records: Sequence[FailoverRecord],
    samples: Sequence[Sample],
    kill: float,
    victim: str,
    end: float,
) -> dict[str, Any]:
    """Every failover figure of one run (JSON-ready)."""
    line = timeline(samples, kill, victim)
    return {
        "timeline": line.as_dict(),
        "phases": phases(records, line, end),
        "failures": failures(records, kill),
        "requests": len(records),
        "completed": sum(r.outcome == "ok" for r in records),
        "completions_per_s": completions_per_second(records, end),
        "failure_end_times_s": sorted(r.end for r in records if r.outcome != "ok"),
    }
