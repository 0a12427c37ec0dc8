"""OpenAI-compatible inference routes. Thin: validation is in protocol.py, work in serving.py."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from lorafleet.server.deps import Gateway, GatewayDep, PrincipalDep
from lorafleet.server.engine.base import Endpoint
from lorafleet.server.errors import EngineUnavailableError
from lorafleet.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorBody,
    ModelList,
)
from lorafleet.server.strict_json import StrictJSONRoute

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
}

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1", tags=["openai"], responses=_ERRORS)


@router.post("/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, gateway: GatewayDep, who: PrincipalDep
) -> Response:
    started = time.perf_counter()
    _refuse_when_draining(gateway)
    return await gateway.service.handle(Endpoint.CHAT, body, request.state.request_id, started, who)


@router.post("/completions")
async def completions(
    body: CompletionRequest, request: Request, gateway: GatewayDep, who: PrincipalDep
) -> Response:
    started = time.perf_counter()
    _refuse_when_draining(gateway)
    return await gateway.service.handle(
        Endpoint.COMPLETIONS, body, request.state.request_id, started, who
    )


@router.get("/models")
async def list_models(gateway: GatewayDep, who: PrincipalDep) -> ModelList:
    return ModelList(data=await gateway.service.resolver.list_models(who))


def _refuse_when_draining(gateway: Gateway) -> None:
    if gateway.draining:
        raise EngineUnavailableError("the gateway is shutting down; retry on another replica")
