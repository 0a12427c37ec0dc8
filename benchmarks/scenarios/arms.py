"""Arms and comparisons: a workload sent to one target, and A-vs-B results over repeats."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lorafleet.benchmarks.environment import now_iso
from lorafleet.benchmarks.loadgen import Endpoint
from lorafleet.benchmarks.processes import ManagedProcess
from lorafleet.benchmarks.stats import paired, summarize_runs


@dataclass(frozen=True)
class Workload:
    num_requests: int
    input_len: int = 128
    output_len: int = 32
    output_range_ratio: float = 0.0
    concurrency: int | None = 1
    request_rate: float = math.inf
    burstiness: float = 1.0
    endpoint: Endpoint = "completions"
    dataset: Literal["random", "chat-file"] = "random"
    dataset_path: Path | None = None

    def describe(self) -> str:
        shape = (
            f"c={self.concurrency}"
            if math.isinf(self.request_rate)
            else f"rate={self.request_rate}/s"
        )
        if not math.isinf(self.request_rate) and self.concurrency:
            shape += f" (max c={self.concurrency})"
        out = f"{self.output_len}" + (
            f"±{self.output_range_ratio:.0%}" if self.output_range_ratio else ""
        )
        data = "random" if self.dataset == "random" else f"chat file {self.dataset_path}"
        lengths = f"in={self.input_len} out={out} tok"
        return f"{self.num_requests} req, {data} {lengths}, {shape}, {self.endpoint}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["request_rate"] = "inf" if math.isinf(self.request_rate) else self.request_rate
        data["dataset_path"] = str(self.dataset_path) if self.dataset_path else None
        data["description"] = self.describe()
        return data


@dataclass
class Arm:
    name: str
    base_url: str
    model: str
    workload: Workload
    adapters: tuple[str, ...] = ()
    adapter_assignment: Literal["round-robin", "random"] = "round-robin"
    metered: dict[str, ManagedProcess] = field(default_factory=dict)  # CPU seconds to record
    runs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.base_url,
            "model": self.model,
            "adapters": list(self.adapters),
            "adapter_assignment": self.adapter_assignment if self.adapters else None,
            "workload": self.workload.as_dict(),
            "runs": self.runs,
            "summary": summarize_runs(self.runs),
        }


def compare(
    name: str,
    arm_a: Arm,
    arm_b: Arm,
    key: str,
    how: str = "ratio",
    *,
    bar: str | None = None,
    passes: Any = None,
) -> dict[str, Any]:
    """A vs B on one metric; `passes(value) -> bool` states whether the bar is met."""
    result = paired(arm_a.runs, arm_b.runs, key, how)
    result |= {"name": name, "a": arm_a.name, "b": arm_b.name, "bar": bar}
    result["meets_bar"] = bool(passes(result["value"])) if passes is not None else None
    if passes is not None:  # how many repeats met it on their own: a median is not the spread
        result["repeats_meeting_bar"] = sum(1 for value in result["per_repeat"] if passes(value))
    return result


def headline_row(
    measure: str,
    comparison_or_value: dict[str, Any] | float,
    unit: str,
    workload: str,
    *,
    bar: str | None = None,
    meets_bar: bool | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    if isinstance(comparison_or_value, dict):
        value = comparison_or_value["value"]
        low, high = comparison_or_value.get("min"), comparison_or_value.get("max")
        bar = bar or comparison_or_value.get("bar")
        meets_bar = comparison_or_value.get("meets_bar") if meets_bar is None else meets_bar
        repeats = len(comparison_or_value.get("per_repeat") or [])
        meeting = comparison_or_value.get("repeats_meeting_bar")
    else:
        value, low, high = comparison_or_value, None, None
        repeats, meeting = 0, None
    return {
        "measure": measure,
        "value": value,
        "unit": unit,
        "min": low,
        "max": high,
        "bar": bar,
        "meets_bar": meets_bar,
        "repeats": repeats or None,
        "repeats_meeting_bar": meeting,
        "workload": workload,
        "date": date or now_iso()[:10],
    }
