"""Repeats and ratios: how runs of one arm are summarized and how arms are compared.

A comparison pairs repeat i of arm A with repeat i of arm B (they ran back to back), so the
spread of the per-repeat ratios shows how much the machine drifted during the run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from lorafleet.benchmarks.metrics import percentile


def summarize_runs(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For every numeric field of the runs: median, min, max, mean and sample stdev."""
    keys = [key for key, value in runs[0].items() if _number(value)] if runs else []
    summary = {}
    for key in keys:
        values = [float(run[key]) for run in runs if _number(run.get(key))]
        if values:
            summary[key] = spread(values)
    return summary


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": percentile(values, 50.0),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": float(len(values)),
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def paired(
    runs_a: Sequence[dict[str, Any]], runs_b: Sequence[dict[str, Any]], key: str, how: str
) -> dict[str, Any]:
    """A vs B on `key`, repeat by repeat: `how` is "ratio" (A/B) or "delta" (A-B).

    The value is the median of the per-repeat figures, not a ratio of the two arms' medians:
    the latter can pair A's best repeat with B's worst and sit at a figure no repeat showed.
    The arms must have run the same number of repeats (they alternate), else nothing pairs.
    """
    if len(runs_a) != len(runs_b):
        raise ValueError(f"unpaired arms: {len(runs_a)} vs {len(runs_b)} repeats")
    values = []
    for run_a, run_b in zip(runs_a, runs_b, strict=True):
        a, b = float(run_a[key]), float(run_b[key])
        if how == "ratio":
            values.append(a / b if b else float("nan"))
        else:
            values.append(a - b)
    return {
        "key": key,
        "how": how,
        "value": percentile(values, 50.0) if values else float("nan"),
        "per_repeat": values,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }
