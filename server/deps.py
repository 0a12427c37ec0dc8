"""Typed access to the lifespan state from handlers (`Annotated` dependency aliases)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from lorafleet.adapters.base_models import fetch_model_config, model_info
from lorafleet.adapters.registration import RegistrationRules, ServedBase
from lorafleet.adapters.sources import SourcePolicy
from lorafleet.server.engine.pool import EnginePool
from lorafleet.server.errors import AuthenticationError, PermissionDeniedError
from lorafleet.server.keys import ADMIN, KeyStore, Principal, constant_time_equal
from lorafleet.server.lora import AdapterManager
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.serving import InferenceService
from lorafleet.server.settings import Settings


@dataclass
class Lifecycle:
    """Set by the process's signal handling (before the lifespan ends): once draining, /ready
    answers 503 and new inference requests are refused while in-flight ones finish."""

    draining: bool = False


@dataclass
class Gateway:
    """Everything long-lived that the handlers share; built and torn down by the lifespan."""

    settings: Settings
    pools: dict[str, EnginePool]
    metrics: GatewayMetrics
    service: InferenceService
    adapters: AdapterManager
    # Base model id -> its weights directory: local mode knows them; cluster mode fetches
    # config.json (from the model's source) on first use.
    model_dirs: dict[str, Path] = field(default_factory=dict)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    keys: KeyStore | None = None  # None: auth is off (no admin key configured)

    @property
    def draining(self) -> bool:
        return self.lifecycle.draining

    @cached_property
    def _served_bases(self) -> tuple[ServedBase, ...]:
        # Validation needs each base model's architecture (config.json) only.
        settings = self.settings
        bases = []
        for spec in settings.served_models:
            path = self.model_dirs.get(spec.name) or fetch_model_config(
                spec.weights, settings.cache_dir
            )
            bases.append(
                ServedBase(
                    spec.name,
                    model_info(path),
                    frozenset({spec.weights}),
                    max_rank=settings.max_lora_rank_for(spec),
                )
            )
        return tuple(bases)

    def registration_rules(self) -> RegistrationRules:
        """Blocking on first use (it may read or fetch the base model's config)."""
        settings = self.settings
        policy = SourcePolicy(
            roots=tuple(root.resolve() for root in settings.adapter_roots),
            allow_hf=settings.allow_hf_sources,
            allow_s3=settings.s3_enabled,
            s3_endpoint_url=settings.s3_endpoint_url,
        )
        return RegistrationRules(
            policy, settings.store_dir, self._served_bases, settings.engine_max_lora_rank
        )


# The dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker
# thread, and that hop alone cost more than the rest of the request path (profiled).
async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.state.gateway
    return gateway


async def get_principal(request: Request) -> Principal:
    """Who is calling. Auth off: everyone is the admin. On: a Bearer admin key or tenant key;
    anything else is 401. Only the Authorization header counts (never Host or path tricks)."""
    gateway: Gateway = request.state.gateway
    admin_key = gateway.settings.admin_key
    if admin_key is None or gateway.keys is None:
        return ADMIN
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
    if constant_time_equal(token, admin_key.get_secret_value()):
        return ADMIN
    principal = gateway.keys.authenticate(token)
    if principal is None:
        raise AuthenticationError("Invalid or revoked API key.")
    return principal


async def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.admin:
        raise PermissionDeniedError("This route needs the admin key.", code="admin_required")
    return principal


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
