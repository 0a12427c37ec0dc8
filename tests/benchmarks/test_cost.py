"""Cost math and the versioned price table."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorafleet.benchmarks.cost import (
    ApiPrice,
    MachinePrice,
    PriceTableError,
    cost_report,
    dollars_per_million,
    load_price_table,
)


def test_dollars_per_million_by_hand() -> None:
    # $0.08/h at 100 tok/s: 360,000 tok/h -> 0.08 / 0.36 = $0.2222 per 1M
    assert dollars_per_million(0.08, 100.0) == pytest.approx(0.08 / 0.36)
    # 40% utilization costs 2.5x as much per token
    assert dollars_per_million(0.08, 100.0, 0.4) == pytest.approx(0.08 / 0.36 / 0.4)
    # $2.49/h at 2,000 tok/s: 7.2M tok/h -> $0.3458 per 1M
    assert dollars_per_million(2.49, 2000.0) == pytest.approx(2.49 / 7.2)


@pytest.mark.parametrize(("tps", "util"), [(0.0, 1.0), (-1.0, 1.0), (10.0, 0.0), (10.0, 1.5)])
def test_dollars_per_million_rejects(tps: float, util: float) -> None:
    with pytest.raises(ValueError, match=r"throughput|utilization"):
        dollars_per_million(1.0, tps, util)


def test_blended_price_is_three_to_one() -> None:
    gpt4o = ApiPrice("gpt-4o", "gpt-4o-2024-08-06", 2.50, 10.00, "2024", "src")
    assert gpt4o.blended_per_1m() == pytest.approx((3 * 2.50 + 10.00) / 4)  # 4.375


def test_default_price_table_has_dated_sourced_prices() -> None:
    table = load_price_table()
    api = {price.id: price for price in table.api}
    assert (api["gpt-4o"].input_per_1m, api["gpt-4o"].output_per_1m) == (2.50, 10.00)
    assert (api["gpt-4o-mini"].input_per_1m, api["gpt-4o-mini"].output_per_1m) == (0.15, 0.60)
    machines = {machine.id: machine for machine in table.machines}
    assert {"cpu-2vcpu-vm", "a100-80gb", "h100-sxm"} <= set(machines)
    assert machines["cpu-2vcpu-vm"].per_hour == 0.08
    for entry in (*table.api, *table.machines):
        assert entry.as_of and entry.source
    assert table.updated and table.version >= 1


def test_unknown_machine_names_known_ones() -> None:
    with pytest.raises(PriceTableError, match="cpu-2vcpu-vm"):
        load_price_table().machine("tpu-v9")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "api:\n  - id: x\n    model: m\n    input_per_1m: -1\n    output_per_1m: 1\n"
            "    as_of: a\n    source: s\n",
            "non-negative",
        ),
        ("api:\n  - id: x\n    model: m\n", "ApiPrice"),
        ("machines:\n  - 3\n", "mapping"),
        ("- just a list\n", "mapping at the top"),
        ("api: [\n", "cannot read"),
    ],
)
def test_bad_price_tables(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(PriceTableError, match=match):
        load_price_table(path)


def test_cost_report_compares_every_api_at_every_utilization() -> None:
    table = load_price_table()
    machine = MachinePrice("vm", "a VM", 0.08, "2026", "src")
    report = cost_report(
        output_tok_s=100.0,
        total_tok_s=400.0,
        input_tokens=300,
        output_tokens=100,
        machine=machine,
        table=table,
    )
    own = {row["utilization"]: row for row in report["self_hosted"]}
    assert own[1.0]["output_per_1m"] == pytest.approx(0.08 / 0.36)
    assert own[1.0]["blended_per_1m"] == pytest.approx(0.08 / 1.44)
    assert own[0.4]["output_per_1m"] == pytest.approx(0.08 / 0.36 / 0.4)
    gpt4o_at_full = next(
        c for c in report["comparisons"] if c["api"] == "gpt-4o" and c["utilization"] == 1.0
    )
    assert gpt4o_at_full["output_times_cheaper"] == pytest.approx(10.0 / (0.08 / 0.36))
    assert gpt4o_at_full["blended_times_cheaper"] == pytest.approx(4.375 / (0.08 / 1.44))
    assert len(report["comparisons"]) == len(table.api) * 2
    assert any("not comparable" in note for note in report["notes"])
    assert report["throughput"]["input_output_ratio"] == pytest.approx(3.0)
    assert not any("not 3:1" in note for note in report["notes"])


def test_cost_report_override_and_ratio_warning() -> None:
    table = load_price_table()
    report = cost_report(
        output_tok_s=100.0,
        total_tok_s=200.0,
        input_tokens=100,
        output_tokens=100,
        machine=table.machine("h100-sxm"),
        table=table,
        per_hour_override=3.0,
    )
    assert report["per_hour_used"] == 3.0
    assert report["self_hosted"][0]["output_per_1m"] == pytest.approx(3.0 / 0.36)
    assert any("not 3:1" in note for note in report["notes"])
    assert any("overridden" in note for note in report["notes"])
