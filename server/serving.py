"""Inference: resolve the requested model, pick a replica, relay the engine's answer.

The request body is validated by the protocol models, rebuilt from declared fields only, and
sent with `model` set to the name the engine knows. Answers pass through as bytes: non-streamed
JSON untouched, streamed SSE events one by one as they arrive (no buffering or coalescing). The
gateway always asks the engine for usage so it can meter; a client that did not ask for
`stream_options.include_usage` never sees the usage chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from lorafleet.server.engine.base import EngineStream, Endpoint
from lorafleet.server.engine.pool import EnginePool, Replica
from lorafleet.server.errors import EngineUnavailableError, LorafleetError, ModelNotFoundError
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.protocol import ModelCard, _SamplingFields

log = logging.getLogger(__name__)

_DONE = b"data: [DONE]\n\n"
_USAGE_ONLY = b'"choices":[]'


@dataclass(frozen=True)
class Target:
    """Where a request goes: `label` names it in metrics, `engine_model` is the engine's name."""

    label: str
    engine_model: str
    pool: EnginePool


class ModelResolver:
    """Maps the `model` a client sends to a target. Names are looked up, never used as paths."""

    def __init__(self, pools: dict[str, EnginePool], created: int) -> None:
        self._pools = pools
        self._created = created

    async def resolve(self, model: str) -> Target:
        pool = self._pools.get(model)
        if pool is None:
            raise ModelNotFoundError(model)
        return Target(label=model, engine_model=model, pool=pool)

    async def list_models(self) -> list[ModelCard]:
        return [
            ModelCard(id=name, created=self._created, root=name) for name in sorted(self._pools)
        ]


class InferenceService:
    def __init__(self, resolver: ModelResolver, metrics: GatewayMetrics) -> None:
        self.resolver = resolver
        self.metrics = metrics

    async def handle(
        self, endpoint: Endpoint, request: _SamplingFields, request_id: str, started: float
    ) -> Response:
        try:
            target = await self.resolver.resolve(request.model)
        except LorafleetError as exc:
            self.metrics.requests.labels("unknown", str(exc.status)).inc()
            raise
        body = request.declared_fields()
        body["model"] = target.engine_model
        if request.stream:
            body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
            return await self._stream(endpoint, body, target, request, request_id, started)
        return await self._complete(endpoint, body, target, request_id, started)

    async def _complete(
        self, endpoint: Endpoint, body: dict[str, Any], target: Target, request_id: str,
        started: float,
    ) -> Response:
        replica = target.pool.pick()
        status = "200"
        gauge = self.metrics.in_flight.labels(target.label)
        gauge.inc()
        try:
            with target.pool.lease(replica):
                result = await self._guard(target.pool, replica, replica.engine.generate(
                    endpoint, body, request_id
                ))
        except LorafleetError as exc:
            status = str(exc.status)
            raise
        finally:
            gauge.dec()
            self.metrics.requests.labels(target.label, status).inc()
        self._record_usage(target.label, result.body.get("usage"))
        self.metrics.e2e_latency.labels(target.label).observe(time.perf_counter() - started)
        return Response(result.raw, media_type="application/json")

    async def _stream(
        self, endpoint: Endpoint, body: dict[str, Any], target: Target,
        request: _SamplingFields, request_id: str, started: float,
    ) -> Response:
        replica = target.pool.pick()
        replica.in_flight += 1
        try:
            stream = await self._guard(
                target.pool, replica, replica.engine.open_stream(endpoint, body, request_id)
            )
        except LorafleetError as exc:
            replica.in_flight -= 1
            self.metrics.requests.labels(target.label, str(exc.status)).inc()
            raise
        relay = self._relay(stream, replica, target.label, request.wants_usage_in_stream, started)
        return StreamingResponse(relay, media_type="text/event-stream")

    async def _relay(
        self, stream: EngineStream, replica: Replica, label: str, wants_usage: bool,
        started: float,
    ) -> AsyncIterator[bytes]:
        status = "200"
        first = True
        gauge = self.metrics.in_flight.labels(label)
        gauge.inc()
        try:
            async for event in stream:
                if first:
                    self.metrics.ttft.labels(label).observe(time.perf_counter() - started)
                    first = False
                if _USAGE_ONLY in event:
                    self._record_usage(label, _parse_event(event).get("usage"))
                    if not wants_usage:
                        continue
                yield event
        except LorafleetError as exc:
            # The status line is gone: the error travels as the stream's last event.
            status = str(exc.status)
            log.warning("stream from %s broke: %s", replica.url, exc.message)
            yield exc.sse_event()
            yield _DONE
        finally:
            await stream.aclose()
            replica.in_flight -= 1
            gauge.dec()
            self.metrics.requests.labels(label, status).inc()
            self.metrics.e2e_latency.labels(label).observe(time.perf_counter() - started)

    @staticmethod
    async def _guard(pool: EnginePool, replica: Replica, call: Any) -> Any:
        """Await an engine call; a replica that cannot be reached stops getting traffic."""
        try:
            return await call
        except EngineUnavailableError:
            pool.mark_failed(replica)
            raise

    def _record_usage(self, label: str, usage: Any) -> None:
        if isinstance(usage, dict):
            self.metrics.record_usage(
                label, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            )


def _parse_event(event: bytes) -> dict[str, Any]:
    payload = event.removeprefix(b"data: ").strip()
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
