"""The price table, read as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorafleet.adapters.training.prices import DEFAULT_PRICES, PriceError, price_for


def test_the_shipped_table_prices_gpt_4o_mini_under_every_name() -> None:
    assert DEFAULT_PRICES.is_file()
    price = price_for("gpt-4o-mini")
    assert price is not None and (price.input_per_1m, price.output_per_1m) == (0.15, 0.60)
    assert price_for("gpt-4o-mini-2024-07-18") == price == price_for("openai/gpt-4o-mini")
    assert price.cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert price_for("smollm2-135m-instruct") is None


def test_a_malformed_table_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("api:\n  - id: x\n    input_per_1m: cheap\n    output_per_1m: 1\n")
    with pytest.raises(PriceError, match="ApiPrice"):
        price_for("x", path)
    path.write_text("machines: []\n")
    with pytest.raises(PriceError, match="no `api` list"):
        price_for("x", path)
