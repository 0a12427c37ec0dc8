"""Dollars per million tokens: a measured throughput against dated API list prices.

    $ per 1M tokens = machine $/hour / (sustained tok/s * 3600) * 1e6 / utilization

- "output": sustained output tok/s of the run;
- "blended": sustained input+output tok/s of a run whose input:output token ratio is about 3:1,
  compared with the API's (3 * input + 1 * output) / 4 price.

Prices are data (`prices.yaml`, versioned beside this module, or a file the user passes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
BLEND_INPUT_PARTS = 3
BLEND_OUTPUT_PARTS = 1
DEFAULT_UTILIZATIONS = (1.0, 0.4)
MODEL_QUALITY_NOTE = (
    "Quality is not comparable: the self-hosted model here is SmolLM2-135M-Instruct, a 135M-"
    "parameter model far weaker than GPT-4o or GPT-4o-mini. The comparison prices the serving "
    "stack, not the answers; a fair one serves a model of the quality the task needs."
)


class PriceTableError(ValueError):
    """The price file is missing a field or has a bad value."""


@dataclass(frozen=True)
class ApiPrice:
    id: str
    model: str
    input_per_1m: float
    output_per_1m: float
    as_of: str
    source: str
    quality: str = ""

    def blended_per_1m(self) -> float:
        parts = BLEND_INPUT_PARTS + BLEND_OUTPUT_PARTS
        return (
            BLEND_INPUT_PARTS * self.input_per_1m + BLEND_OUTPUT_PARTS * self.output_per_1m
        ) / parts


@dataclass(frozen=True)
class MachinePrice:
    id: str
    description: str
    per_hour: float
    as_of: str
    source: str
    per_hour_high: float | None = None


@dataclass(frozen=True)
class PriceTable:
    version: int
    updated: str
    path: str
    api: tuple[ApiPrice, ...]
    machines: tuple[MachinePrice, ...]

    def machine(self, machine_id: str) -> MachinePrice:
        for machine in self.machines:
            if machine.id == machine_id:
                return machine
        known = ", ".join(machine.id for machine in self.machines)
        raise PriceTableError(f"no machine {machine_id!r} in {self.path} (known: {known})")


_Entry = TypeVar("_Entry", ApiPrice, MachinePrice)


def load_price_table(path: Path | None = None) -> PriceTable:
    source = path or DEFAULT_PRICES
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PriceTableError(f"cannot read price table {source}: {exc}") from exc
    if not isinstance(data, dict):
        raise PriceTableError(f"{source}: expected a mapping at the top level")
    return PriceTable(
        version=int(data.get("version", 0)),
        updated=str(data.get("updated", "")),
        path=str(source),
        api=tuple(_build(ApiPrice, row, source) for row in data.get("api") or []),
        machines=tuple(_build(MachinePrice, row, source) for row in data.get("machines") or []),
    )


def _build(kind: type[_Entry], row: Any, source: Path) -> _Entry:
    if not isinstance(row, dict):
        raise PriceTableError(f"{source}: each {kind.__name__} entry must be a mapping")
    try:
        entry = kind(**row)
    except TypeError as exc:
        raise PriceTableError(f"{source}: {kind.__name__} {row.get('id')!r}: {exc}") from exc
    for name, value in asdict(entry).items():
        is_price = name.startswith(("per_hour", "input_per", "output_per"))
        if is_price and value is not None and (not isinstance(value, int | float) or value < 0):
            raise PriceTableError(f"{source}: {entry.id}.{name} must be a non-negative number")
    return entry


def dollars_per_million(per_hour: float, tokens_per_s: float, utilization: float = 1.0) -> float:
    """Cost of 1M tokens on a machine billed `per_hour` that sustains `tokens_per_s` when busy
    and is busy `utilization` of the time."""
    if tokens_per_s <= 0:
        raise ValueError("throughput must be positive to price it")
    if not 0 < utilization <= 1:
        raise ValueError("utilization must be in (0, 1]")
    return per_hour / (tokens_per_s * 3600.0) * 1e6 / utilization


def cost_report(
    *,
    output_tok_s: float,
    total_tok_s: float,
    input_tokens: int,
    output_tokens: int,
    machine: MachinePrice,
    table: PriceTable,
    per_hour_override: float | None = None,
    utilizations: tuple[float, ...] = DEFAULT_UTILIZATIONS,
) -> dict[str, Any]:
    """Self-hosted $/1M (output and blended, at each utilization) beside every API price."""
    per_hour = machine.per_hour if per_hour_override is None else per_hour_override
    ratio = input_tokens / output_tokens if output_tokens else 0.0
    own = [
        {
            "utilization": utilization,
            "output_per_1m": dollars_per_million(per_hour, output_tok_s, utilization),
            "blended_per_1m": dollars_per_million(per_hour, total_tok_s, utilization),
        }
        for utilization in utilizations
    ]
    api = [asdict(price) | {"blended_per_1m": price.blended_per_1m()} for price in table.api]
    comparisons = [
        {
            "api": price["id"],
            "utilization": row["utilization"],
            "output_times_cheaper": price["output_per_1m"] / row["output_per_1m"],
            "blended_times_cheaper": price["blended_per_1m"] / row["blended_per_1m"],
        }
        for price in api
        for row in own
    ]
    notes = [MODEL_QUALITY_NOTE]
    if abs(ratio - BLEND_INPUT_PARTS / BLEND_OUTPUT_PARTS) > 0.3:
        notes.append(
            f"The measured run's input:output token ratio is {ratio:.2f}:1, not 3:1; its "
            "'blended' figure prices that mix."
        )
    if per_hour_override is not None:
        notes.append(f"Machine price overridden by the user: ${per_hour_override}/hour.")
    return {
        "machine": asdict(machine),
        "per_hour_used": per_hour,
        "price_table": {"path": table.path, "version": table.version, "updated": table.updated},
        "throughput": {
            "output_tok_s": output_tok_s,
            "total_tok_s": total_tok_s,
            "input_output_ratio": ratio,
        },
        "self_hosted": own,
        "api": api,
        "comparisons": comparisons,
        "notes": notes,
    }
