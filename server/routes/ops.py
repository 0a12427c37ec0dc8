"""Operations: liveness, readiness, Prometheus metrics, and the API schema and docs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import HTMLResponse, JSONResponse, Response

from lorafleet.server.deps import GatewayDep, require_admin
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


# Metrics name every adapter and engine; the schema and docs map the admin API. With auth on,
# they are the admin's (FastAPI's own unguarded /docs and /openapi.json are switched off).
AdminOnly = [Depends(require_admin)]


@router.get("/openapi.json", include_in_schema=False, dependencies=AdminOnly)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=AdminOnly)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="lorafleet API")


@router.get("/metrics", dependencies=AdminOnly)
async def metrics(gateway: GatewayDep) -> Response:
    metrics = gateway.metrics
    for pool in gateway.pools.values():
        metrics.pool_in_flight.labels(pool.base_model).set(pool.in_flight)
        metrics.model_base.labels(pool.base_model, pool.base_model).set(1)
        for replica in pool.replicas:
            metrics.engine_ready.labels(pool.base_model, replica.url).set(replica.healthy)
    for name in metrics.models.admitted:
        version = gateway.adapters.lookup(name)
        if version is not None:
            metrics.model_base.labels(name, version.base_model).set(1)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
