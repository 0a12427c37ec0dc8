"""Dated API list prices and machine prices: data that the gateway (`GET /v1/usage` prices
metered tokens) and the benchmarks (`lorafleet bench cost`) both read, so neither imports the other.

The table is `prices.yaml` beside this module (versioned, edit it or pass your own file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
BLEND_INPUT_PARTS = 3
BLEND_OUTPUT_PARTS = 1


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
