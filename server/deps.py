"""Typed access to the lifespan state from handlers (`Annotated` dependency aliases)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from lorafleet.server.engine.pool import EnginePool
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.serving import InferenceService
from lorafleet.server.settings import Settings


@dataclass
class Gateway:
    """Everything long-lived that the handlers share; built and torn down by the lifespan."""

    settings: Settings
    pools: dict[str, EnginePool]
    metrics: GatewayMetrics
    service: InferenceService
    draining: bool = False
    background: list[object] = field(default_factory=list)


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.state.gateway
    return gateway


def get_service(request: Request) -> InferenceService:
    return get_gateway(request).service


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
ServiceDep = Annotated[InferenceService, Depends(get_service)]
