"""Per-run metrics, computed exactly as `vllm bench serve` does and named as it names them.

- TTFT: request sent -> first chunk with a choice. E2EL (`latency`): sent -> last such chunk.
- TPOT, per request with more than one output token: (E2EL - TTFT) / (output_tokens - 1).
- ITL: every gap between consecutive token chunks, pooled over all requests.
- Token counts come from the server's `usage`.
- Goodput: completed requests per second meeting every SLO given (`ttft:MS tpot:MS e2el:MS`);
  a request with a single output token has TPOT 0 for this purpose, as in vLLM.
- Peak output tok/s: the busiest one-second bucket of token chunks, as in vLLM.
- Statistics: mean, median, population std, and percentiles with linear interpolation
  (numpy's default), in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from lorafleet.benchmarks.loadgen import RequestRecord

SLO_NAMES = ("ttft", "tpot", "e2el")
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], pct: float) -> float:
    """numpy.percentile(values, pct) with the default 'linear' method; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def std(values: Sequence[float]) -> float:
    """Population standard deviation (numpy.std's default)."""
    if not values:
        return 0.0
    centre = mean(values)
    return math.sqrt(sum((value - centre) ** 2 for value in values) / len(values))


def parse_goodput(items: Iterable[str]) -> dict[str, float]:
    """`["ttft:500", "tpot:50"]` or `["ttft:500 tpot:50"]` -> {"ttft": 500.0, "tpot": 50.0}."""
    slos: dict[str, float] = {}
    for item in items:
        for pair in item.replace(",", " ").split():
            name, sep, value = pair.partition(":")
            if not sep or name not in SLO_NAMES:
                raise ValueError(f"SLO {pair!r}: expected NAME:MS with NAME one of {SLO_NAMES}")
            try:
                slos[name] = float(value)
            except ValueError as exc:
                raise ValueError(f"SLO {pair!r}: {value!r} is not a number of ms") from exc
            if slos[name] < 0:
                raise ValueError(f"SLO {pair!r}: must not be negative")
    return slos


def tpot(record: RequestRecord) -> float:
    """Seconds per output token after the first; 0.0 with fewer than two output tokens."""
    if record.output_tokens <= 1:
        return 0.0
    return (record.latency - record.ttft) / (record.output_tokens - 1)


def meets_slos(record: RequestRecord, slos_ms: dict[str, float]) -> bool:
    measured = {"ttft": record.ttft, "tpot": tpot(record), "e2el": record.latency}
    return all(measured[name] <= limit / 1000.0 for name, limit in slos_ms.items())  # as vLLM


def peak_output_rate(records: Sequence[RequestRecord]) -> tuple[float, int]:
    """(max token chunks in any one-second bucket, max requests active in any bucket)."""
    done = [record for record in records if record.success]
    if not done:
        return 0.0, 0
    origin = min(record.start_time for record in done)
    end = max(record.start_time + record.latency for record in done)
    buckets = math.ceil(end - origin) + 1
    tokens = [0] * buckets
    active = [0] * buckets
    for record in done:
        moment = record.start_time + record.ttft
        times = [moment]
        for gap in record.itl:
            moment += gap
            times.append(moment)
        for when in times:
            index = int(when - origin)
            if 0 <= index < buckets:
                tokens[index] += 1
        first = int(record.start_time - origin)
        last = int(record.start_time + record.latency - origin)
        for second in range(first, min(last, buckets - 1) + 1):
            active[second] += 1
    return float(max(tokens)), max(active)


def _stats(name: str, seconds: Sequence[float], percentiles: Sequence[float]) -> dict[str, float]:
    values = [value * 1000.0 for value in seconds]
    stats = {
        f"mean_{name}_ms": mean(values),
        f"median_{name}_ms": percentile(values, 50.0),
        f"std_{name}_ms": std(values),
    }
    for pct in percentiles:
        stats[f"p{_pct_word(pct)}_{name}_ms"] = percentile(values, pct)
    return stats


def _pct_word(pct: float) -> str:
    return str(int(pct)) if int(pct) == pct else str(pct)


def compute_metrics(
    records: Sequence[RequestRecord],
    duration: float,
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    goodput_slos_ms: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The metric block of one run, keyed like `vllm bench serve`'s result JSON."""
    done = [record for record in records if record.success]
    total_input = sum(record.prompt_len for record in done)
    total_output = sum(record.output_tokens for record in done)
    tpots = [tpot(record) for record in done if record.output_tokens > 1]
    itls = [gap for record in done for gap in record.itl]
    peak, peak_active = peak_output_rate(records)
    good = sum(meets_slos(record, goodput_slos_ms) for record in done) if goodput_slos_ms else 0
    result: dict[str, Any] = {
        "duration": duration,
        "completed": len(done),
        "failed": len(records) - len(done),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(done) / duration if duration else 0.0,
        "request_goodput": (good / duration if duration else 0.0) if goodput_slos_ms else None,
        "output_throughput": total_output / duration if duration else 0.0,
        "total_token_throughput": (total_input + total_output) / duration if duration else 0.0,
        "max_output_tokens_per_s": peak,
        "max_concurrent_requests": peak_active,
    }
    result |= _stats("ttft", [record.ttft for record in done], percentiles)
    result |= _stats("tpot", tpots, percentiles)
    result |= _stats("itl", itls, percentiles)
    result |= _stats("e2el", [record.latency for record in done], percentiles)
    # lorafleet additions (not in vLLM's JSON)
    result["mean_chunks_per_request"] = mean([float(record.chunks) for record in done])
    result["usage_reported"] = all(record.usage_reported for record in done) if done else False
    result["client_queue_time_mean_ms"] = mean([record.client_queue_time * 1000 for record in done])
    return result
