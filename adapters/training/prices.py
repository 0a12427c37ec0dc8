"""API token prices for labelling cost estimates: the dated table in `lorafleet.prices`
(lorafleet/prices.yaml), the same one `GET /v1/usage` and `lorafleet bench cost` read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorafleet.prices import DEFAULT_PRICES, PriceTableError, load_price_table

PriceError = PriceTableError  # the price table is unreadable or malformed


@dataclass(frozen=True)
class TokenPrice:
    input_per_1m: float
    output_per_1m: float
    source: str

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


def price_for(model: str, path: Path = DEFAULT_PRICES) -> TokenPrice | None:
    """The list price of `model` by id or dated name (`gpt-4o-mini`, `gpt-4o-mini-2024-07-18`,
    `openai/gpt-4o-mini`), or None if unlisted."""
    table = load_price_table(path)
    if not table.api:
        raise PriceError(f"{path}: no `api` list of prices")
    wanted = {model, model.rsplit("/", 1)[-1]}
    for api in table.api:
        if {api.id, api.model} & wanted:
            return TokenPrice(api.input_per_1m, api.output_per_1m, f"{path.name}:{api.id}")
    return None


__all__ = ["DEFAULT_PRICES", "PriceError", "TokenPrice", "price_for"]
