"""`GET /v1/usage`: metered requests and tokens (admin), priced at API list prices.

    /v1/usage?group_by=day,tenant,model&since=2026-11-01

`model` is the base model id or the adapter name. Each row carries what the same tokens would
have cost at each hosted API's list price, from the dated price table `lorafleet bench` uses
too (lorafleet/prices.yaml).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query

from lorafleet.prices import load_price_table
from lorafleet.server.deps import GatewayDep, require_admin
from lorafleet.server.errors import InvalidRequestError
from lorafleet.server.strict_json import StrictJSONRoute
from lorafleet.server.usage import GROUPS

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/usage",
    tags=["usage"],
    dependencies=[Depends(require_admin)],
)


@router.get("")
async def usage(
    gateway: GatewayDep,
    group_by: str = Query("day", max_length=64, description=f"comma-separated: {GROUPS}"),
    since: str | None = Query(None, pattern=r"^\d{4}-\d{2}-\d{2}$"),
) -> dict[str, Any]:
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise InvalidRequestError(f"cannot group by {', '.join(unknown)}", param="group_by")
    meter = gateway.service.meter
    if meter is None:
        raise InvalidRequestError("metering is off")
    await asyncio.to_thread(meter.flush)  # include what is still in memory
    rows = await asyncio.to_thread(meter.report, groups, since)
    prices = load_price_table()
    for row in rows:
        row["api_equivalent_usd"] = {
            api.id: round(
                row["prompt_tokens"] / 1e6 * api.input_per_1m
                + row["completion_tokens"] / 1e6 * api.output_per_1m,
                6,
            )
            for api in prices.api
        }
    return {"object": "list", "group_by": groups, "prices_updated": prices.updated, "data": rows}
