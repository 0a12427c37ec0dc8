"""API key admin: create (the key is shown once), list, revoke. Admin key only."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from lorafleet.server.deps import Gateway, GatewayDep, require_admin
from lorafleet.server.errors import InvalidRequestError, NotFoundError
from lorafleet.server.keys import KeyStore
from lorafleet.server.strict_json import StrictJSONRoute

_KEY_ID = re.compile(r"^[0-9a-f]{1,64}$")

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/keys",
    tags=["keys"],
    dependencies=[Depends(require_admin)],
)


class CreateKey(BaseModel):
    tenant: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    adapters: list[str] = Field(default_factory=list, max_length=1000)
    # Bounded to fit the registry's 64-bit columns (a float like 1e30 validates as an int).
    rpm: int | None = Field(None, ge=1, le=2**62)
    tpm: int | None = Field(None, ge=1, le=2**62)
    budget_tokens: int | None = Field(None, ge=1, le=2**62)


@router.post("", status_code=201)
async def create_key(body: CreateKey, gateway: GatewayDep) -> JSONResponse:
    keys = _keys(gateway)
    key, record = await asyncio.to_thread(
        keys.create, body.tenant, body.adapters, body.rpm, body.tpm, body.budget_tokens
    )
    await keys.refresh()
    grants = keys.snapshot.grants.get(body.tenant, frozenset())
    return JSONResponse({"key": key, **record.to_json(grants)}, status_code=201)


@router.get("")
async def list_keys(gateway: GatewayDep) -> dict[str, Any]:
    return {"object": "list", "data": _keys(gateway).list_json()}


@router.delete("/{key_id}")
async def revoke_key(key_id: str, gateway: GatewayDep) -> dict[str, Any]:
    keys = _keys(gateway)
    # Key ids are hex; anything else is not looked up (PostgreSQL refuses a NUL byte loudly).
    if _KEY_ID.match(key_id) is None or not await asyncio.to_thread(keys.revoke, key_id):
        raise NotFoundError(f"no active key {key_id!r}", code="key_not_found")
    await keys.refresh()
    return {"key_id": key_id, "revoked": True}


def _keys(gateway: Gateway) -> KeyStore:
    if gateway.keys is None:
        raise InvalidRequestError("auth is off: set LORAFLEET_ADMIN_KEY to manage API keys")
    return gateway.keys
