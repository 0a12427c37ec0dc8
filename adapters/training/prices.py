"""API token prices for cost estimates, read as data from `benchmarks/prices.yaml`.

The file is the benchmark's price table; it is read here as plain YAML (not through
`lorafleet.benchmarks`) so labelling does not pull the benchmark package in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

# lorafleet/adapters/training/prices.py -> lorafleet/benchmarks/prices.yaml; the same relative
# place in a checkout (through the lorafleet/ symlinks) and in an installed package.
DEFAULT_PRICES = Path(__file__).parents[2] / "benchmarks" / "prices.yaml"


class PriceError(ValueError):
    """The price table is unreadable or malformed."""


@dataclass(frozen=True)
class TokenPrice:
    input_per_1m: float
    output_per_1m: float
    source: str

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


def load_api_prices(path: Path = DEFAULT_PRICES) -> dict[str, TokenPrice]:
    """Every `api` row, under both its short `id` and its dated `model` name."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PriceError(f"cannot read the price table {path}: {exc}") from exc
    rows = data.get("api") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise PriceError(f"{path}: no `api` list of prices")
    prices: dict[str, TokenPrice] = {}
    for row in rows:
        try:
            price = TokenPrice(
                float(row["input_per_1m"]), float(row["output_per_1m"]), f"{path.name}:{row['id']}"
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PriceError(f"{path}: malformed api row {row!r}") from exc
        for name in (row["id"], row.get("model")):
            if name:
                prices[str(name)] = price
    return prices


def price_for(model: str, path: Path = DEFAULT_PRICES) -> TokenPrice | None:
    """The list price of `model` (`gpt-4o-mini`, `openai/gpt-4o-mini`), or None if unlisted."""
    prices = load_api_prices(path)
    return prices.get(model) or prices.get(model.rsplit("/", 1)[-1])
