"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from lorafleet.server.deps import GatewayDep
from lorafleet.server.strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute, tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (liveness). Says nothing about the engines."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(gateway: GatewayDep) -> Response:
    """200 when every base model has a ready engine and the gateway is not draining."""
    pools = {name: pool.ready for name, pool in gateway.pools.items()}
    ok = all(pools.values()) and bool(pools) and not gateway.draining
    body = {"status": "ready" if ok else "not ready", "draining": gateway.draining, "models": pools}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(gateway: GatewayDep) -> Response:
    for pool in gateway.pools.values():
        for replica in pool.replicas:
            gateway.metrics.engine_ready.labels(pool.base_model, replica.url).set(replica.healthy)
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)
