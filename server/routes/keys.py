"""API keys and tenants' grants, admin key only (`lorafleet keys ...` calls these: keys_cli.py).

POST   /v1/keys                              {"tenant", "adapters"?, "rpm"?, ...} -> 201, key once
GET    /v1/keys                              every key, never the secrets
DELETE /v1/keys/{key_id}                     revoke a key
GET    /v1/keys/tenants/{tenant}/grants           the adapters every key of the tenant reaches
POST   /v1/keys/tenants/{tenant}/grants           {"adapters": [...]} grant them (to all its keys)
DELETE /v1/keys/tenants/{tenant}/grants/{adapter} revoke one grant

Grants belong to the tenant (docs/design/tenancy.md): a key's `adapters` can give a tenant's
first key its grants, but never widen an existing tenant's (409 `grant_required`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from lorafleet.adapters.registration import NAME_PATTERN
from lorafleet.server.deps import Gateway, GatewayDep, require_admin
from lorafleet.server.errors import InvalidRequestError, NotFoundError, RegistryUnavailableError
from lorafleet.server.keys import KeyStore
from lorafleet.server.strict_json import StrictJSONRoute

T = TypeVar("T")
_KEY_ID = re.compile(r"^[0-9a-f]{1,64}$")
_TENANT = r"^[A-Za-z0-9._-]+$"
_ADAPTER = NAME_PATTERN.pattern  # a name an adapter can have (no `@version`: grants are names)

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/keys",
    tags=["keys"],
    dependencies=[Depends(require_admin)],
)
grants_router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/keys/tenants/{tenant}/grants",
    tags=["keys"],
    dependencies=[Depends(require_admin)],
)
AdapterName = Annotated[str, Field(min_length=1, max_length=64, pattern=_ADAPTER)]


class CreateKey(BaseModel):
    tenant: str = Field(..., min_length=1, max_length=64, pattern=_TENANT)
    # Grants for a tenant's first key; for a tenant with keys, only adapters it already has.
    adapters: list[AdapterName] = Field(default_factory=list, max_length=1000)
    # Bounded to fit the registry's 64-bit columns (a float like 1e30 validates as an int).
    rpm: int | None = Field(None, ge=1, le=2**62)
    tpm: int | None = Field(None, ge=1, le=2**62)
    budget_tokens: int | None = Field(None, ge=1, le=2**62)


class GrantAdapters(BaseModel):
    adapters: list[AdapterName] = Field(..., min_length=1, max_length=1000)


@router.post("", status_code=201)
async def create_key(body: CreateKey, gateway: GatewayDep) -> JSONResponse:
    keys = _keys(gateway)
    key, record, grants = await _call(
        keys.create, body.tenant, body.adapters, body.rpm, body.tpm, body.budget_tokens
    )
    await keys.refresh()
    return JSONResponse({"key": key, **record.to_json(grants)}, status_code=201)


@router.get("")
async def list_keys(gateway: GatewayDep) -> dict[str, Any]:
    return {"object": "list", "data": _keys(gateway).list_json()}


@router.delete("/{key_id}")
async def revoke_key(key_id: str, gateway: GatewayDep) -> dict[str, Any]:
    keys = _keys(gateway)
    # Key ids are hex; anything else is not looked up (PostgreSQL refuses a NUL byte loudly).
    if _KEY_ID.match(key_id) is None or not await _call(keys.revoke, key_id):
        raise NotFoundError(f"no active key {key_id!r}", code="key_not_found")
    await keys.refresh()
    return {"key_id": key_id, "revoked": True}


@grants_router.get("")
async def list_grants(
    gateway: GatewayDep, tenant: str = Path(..., max_length=64, pattern=_TENANT)
) -> dict[str, Any]:
    return {"tenant": tenant, "adapters": sorted(_keys(gateway).grants_of(tenant))}


@grants_router.post("")
async def grant(
    body: GrantAdapters,
    gateway: GatewayDep,
    tenant: str = Path(..., max_length=64, pattern=_TENANT),
) -> dict[str, Any]:
    keys = _keys(gateway)
    grants = await _call(keys.grant, tenant, body.adapters)
    await keys.refresh()
    return {"tenant": tenant, "adapters": sorted(grants)}


@grants_router.delete("/{adapter}")
async def revoke_grant(tenant: str, adapter: str, gateway: GatewayDep) -> dict[str, Any]:
    keys = _keys(gateway)
    # Names no grant can have are not looked up (a NUL byte would read as a database outage).
    known = re.match(_TENANT, tenant) is not None and NAME_PATTERN.match(adapter) is not None
    if not known or not await _call(keys.revoke_grant, tenant, adapter):
        raise NotFoundError(f"tenant {tenant!r} has no grant {adapter!r}", code="grant_not_found")
    await keys.refresh()
    return {"tenant": tenant, "adapter": adapter, "revoked": True}


def _keys(gateway: Gateway) -> KeyStore:
    if gateway.keys is None:
        raise InvalidRequestError("auth is off: set LORAFLEET_ADMIN_KEY to manage API keys")
    return gateway.keys


async def _call(func: Callable[..., T], *args: Any) -> T:
    """Run a key store write in a worker thread; a database outage is a 503, not a 500."""
    try:
        return await asyncio.to_thread(func, *args)
    except SQLAlchemyError as exc:
        raise RegistryUnavailableError(f"the key store is unavailable: {exc!r}") from exc
