"""Dollars per million tokens: a measured throughput against dated API list prices.

    $ per 1M tokens = machine $/hour / (sustained tok/s * 3600) * 1e6 / utilization

- "output": sustained output tok/s of the run;
- "blended": sustained input+output tok/s of a run whose input:output token ratio is about 3:1,
  compared with the API's (3 * input + 1 * output) / 4 price.

Prices are data (`lorafleet/prices.yaml`, read by `lorafleet.prices`, or a file the user passes).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lorafleet.prices import (
    BLEND_INPUT_PARTS,
    BLEND_OUTPUT_PARTS,
    DEFAULT_PRICES,
    ApiPrice,
    MachinePrice,
    PriceTable,
    PriceTableError,
    load_price_table,
)

DEFAULT_UTILIZATIONS = (1.0, 0.4)
MODEL_QUALITY_NOTE = (
    "Quality is not comparable: the self-hosted model here is SmolLM2-135M-Instruct, a 135M-"
    "parameter model far weaker than GPT-4o or GPT-4o-mini. The comparison prices the serving "
    "stack, not the answers; a fair one serves a model of the quality the task needs."
)


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


__all__ = [
    "DEFAULT_PRICES",
    "ApiPrice",
    "MachinePrice",
    "PriceTable",
    "PriceTableError",
    "cost_report",
    "dollars_per_million",
    "load_price_table",
]
