"""Adapter admin API: register, list, inspect, remove, roll back.

POST   /v1/adapters                      {"name", "source", "base_model"?} -> 201 record
GET    /v1/adapters                      every adapter with its versions
GET    /v1/adapters/{name}               one adapter, with per-engine load state
DELETE /v1/adapters/{name}[@{version}]   remove every version, or one
POST   /v1/adapters/{name}/rollback      {"version"?} point the alias back
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from lorafleet.adapters.registration import NAME_PATTERN, register_adapter
from lorafleet.adapters.registry import Adapter, AdapterNotFoundError, RegistryConflictError
from lorafleet.adapters.sources import SourceError
from lorafleet.adapters.validation import AdapterValidationError
from lorafleet.server.deps import GatewayDep, require_admin
from lorafleet.server.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from lorafleet.server.lora import AdapterManager
from lorafleet.server.strict_json import StrictJSONRoute

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/v1/adapters",
    tags=["adapters"],
    dependencies=[Depends(require_admin)],
)
T = TypeVar("T")
_FORBIDDEN_SOURCE_CODES = {"path_not_allowed", "source_disabled"}


class RegisterRequest(BaseModel):
    name: str = Field(..., min_length=1, max_length=64)
    source: str = Field(..., min_length=1, max_length=4096)
    base_model: str | None = Field(None, max_length=256)


class RollbackRequest(BaseModel):
    version: int | None = Field(None, ge=1, le=2**31 - 1)


@router.post("", status_code=201)
async def register(body: RegisterRequest, gateway: GatewayDep) -> JSONResponse:
    manager = _manager(gateway)
    rules = await asyncio.to_thread(gateway.registration_rules)
    version = await _call(
        register_adapter, manager.registry, rules, body.name, body.source, body.base_model
    )
    await manager.refresh(force=True)
    record = {**version.to_json(), "engines": manager.engine_states(version)}
    return JSONResponse(record, status_code=201)


@router.get("")
async def list_adapters(gateway: GatewayDep) -> dict[str, Any]:
    manager = _manager(gateway)
    snapshot = await _call(manager.registry.snapshot)
    return {
        "object": "list",
        "data": [_adapter_json(a, manager) for a in snapshot.adapters.values()],
    }


@router.get("/{name}")
async def get_adapter(name: str, gateway: GatewayDep) -> dict[str, Any]:
    manager = _manager(gateway)
    return _adapter_json(await _call(manager.registry.get, _known_form(name)), manager)


@router.delete("/{ref}")
async def remove_adapter(ref: str, gateway: GatewayDep) -> dict[str, Any]:
    manager = _manager(gateway)
    name, _, version = ref.partition("@")
    if version and not (version.isascii() and version.isdigit() and len(version) <= 9):
        raise InvalidRequestError(f"bad adapter reference {ref!r}: use NAME or NAME@VERSION")
    adapter = await _call(
        manager.registry.remove, _known_form(name), int(version) if version else None
    )
    await manager.refresh(force=True)
    return _adapter_json(adapter, manager)


@router.post("/{name}/rollback")
async def rollback(name: str, body: RollbackRequest, gateway: GatewayDep) -> dict[str, Any]:
    manager = _manager(gateway)
    adapter = await _call(manager.registry.rollback, _known_form(name), body.version)
    await manager.refresh(force=True)
    return _adapter_json(adapter, manager)


def _known_form(name: str) -> str:
    """A name no adapter can have is not looked up: 404 at once (PostgreSQL would refuse a NUL
    byte in it with an error that reads as the registry being down)."""
    if NAME_PATTERN.match(name) is None:
        raise NotFoundError(f"adapter {name!r} is not registered", code="adapter_not_found")
    return name


def _manager(gateway: Any) -> AdapterManager:
    manager: AdapterManager = gateway.adapters
    return manager


async def _call(func: Callable[..., T], *args: Any) -> T:
    """Run a registry call in a worker thread, mapping its errors to API errors."""
    try:
        return await asyncio.to_thread(func, *args)
    except AdapterNotFoundError as exc:
        raise NotFoundError(str(exc), code="adapter_not_found") from exc
    except RegistryConflictError as exc:
        raise ConflictError(str(exc)) from exc
    except SourceError as exc:
        cls = PermissionDeniedError if exc.code in _FORBIDDEN_SOURCE_CODES else InvalidRequestError
        raise cls(str(exc), param="source", code=exc.code) from exc
    except AdapterValidationError as exc:
        param = "name" if exc.code == "invalid_name" else "source"
        raise InvalidRequestError(str(exc), param=param, code=exc.code) from exc
    except SQLAlchemyError as exc:
        raise RegistryUnavailableError(f"the adapter registry is unavailable: {exc!r}") from exc


def _adapter_json(adapter: Adapter, manager: AdapterManager) -> dict[str, Any]:
    current = adapter.current
    return {
        "name": adapter.name,
        "current_version": adapter.current_version,
        **({k: v for k, v in current.to_json().items() if k != "name"} if current else {}),
        "engines": manager.engine_states(current) if current else {},
        "versions": [v.to_json() for v in adapter.versions],
    }
