"""The gateway application factory and its lifespan.

    create_app(settings)                      cluster mode: each model's engine_urls / discovery
    create_app(settings, supervisor=sup)      local mode: the lifespan starts and stops engines
    create_app(settings, transport=fake)      tests: engines behind an httpx transport

The lifespan owns every long-lived object (HTTP client, pools, health tasks, supervisor) and
hands them to handlers as one typed `Gateway` in the request state; nothing lives in globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from functools import partial

import httpx
import redis.asyncio
from fastapi import FastAPI

from lorafleet import __version__
from lorafleet.adapters import registry as registry_store
from lorafleet.adapters.guard import write_guard_adapter
from lorafleet.adapters.registration import register_adapter
from lorafleet.adapters.registry import AdapterRegistry
from lorafleet.adapters.sources import clean_store_temporaries
from lorafleet.db import Database
from lorafleet.server import keys as key_store
from lorafleet.server import usage as usage_store
from lorafleet.server.announce import announce_ready
from lorafleet.server.deps import Gateway, Lifecycle
from lorafleet.server.engine.http import HttpClient, Timeouts, make_client
from lorafleet.server.engine.kinds import engine_client
from lorafleet.server.engine.pool import EnginePool
from lorafleet.server.engine.supervisor import EngineSupervisor, has_cuda_device
from lorafleet.server.errors import install_error_handlers
from lorafleet.server.keys import KeyStore
from lorafleet.server.limits import LocalRateLimiter, RateLimiter
from lorafleet.server.loops import survive
from lorafleet.server.lora import AdapterManager
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.middleware import (
    BodyLimitMiddleware,
    HeaderLimitMiddleware,
    RequestIdMiddleware,
)
from lorafleet.server.routes import adapters as adapter_routes
from lorafleet.server.routes import keys as key_routes
from lorafleet.server.routes import openai, ops
from lorafleet.server.routes import usage as usage_routes
from lorafleet.server.serving import InferenceService, ModelResolver, RetryPolicy
from lorafleet.server.settings import ModelSpec, Settings
from lorafleet.server.shared_limits import RedisRateLimiter, connect
from lorafleet.server.token_limits import TokenLimits
from lorafleet.server.tracing import Tracing
from lorafleet.server.usage import UsageMeter
from lorafleet.vllm_plugins import cpu_lora_ops

log = logging.getLogger(__name__)

# Every store sharing the gateway's database, each with its own tables (lorafleet.db).
STORE_MIGRATIONS = (registry_store.MIGRATIONS, key_store.MIGRATIONS, usage_store.MIGRATIONS)


def create_app(
    settings: Settings,
    *,
    supervisor: EngineSupervisor | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    models = settings.served_models
    engine_urls = supervisor.urls() if supervisor else {m.name: m.engine_urls for m in models}
    # Models whose engines run LoRA: local mode decides per model (a quantised checkpoint on a
    # CPU engine runs without), cluster mode takes engine_enable_lora for every engine.
    lora = (
        supervisor.lora_models()
        if supervisor
        else {m.name for m in models if settings.engine_enable_lora}
    )
    for model in models:
        if not engine_urls.get(model.name) and not model.engine_discovery:
            raise ValueError(
                f"no engines for {model.name}: set its engine_urls or engine_discovery, or "
                "pass a supervisor"
            )
    tracing = tracing or Tracing.otlp(settings.otlp_endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Gateway]]:
        client = make_client(
            settings.engine_http_client,
            Timeouts(
                connect_s=settings.connect_timeout_s,
                read_s=max(settings.first_byte_timeout_s, settings.inter_token_timeout_s),
            ),
            transport,
        )
        pools = {
            m.name: EnginePool(
                m.name,
                [
                    engine_client(m.engine_kind, u, client, lora=m.name in lora)
                    for u in engine_urls[m.name]
                ],
            )
            for m in models
        }
        metrics = GatewayMetrics(pools, max_adapter_labels=settings.metrics_max_adapter_labels)
        database = Database(settings.registry_url)
        await asyncio.to_thread(database.migrate, *STORE_MIGRATIONS)
        registry = AdapterRegistry(database)
        await asyncio.to_thread(clean_store_temporaries, settings.store_dir)
        adapters = AdapterManager(
            registry,
            metrics,
            load_timeout_s=settings.adapter_load_timeout_s,
            max_per_replica=settings.max_adapters_per_engine,
        )
        resolver = ModelResolver(pools, adapters, created=int(time.time()))
        retry = RetryPolicy(settings.retry_attempts, settings.retry_max_wait_s)
        meter = UsageMeter(database)
        limiter, redis_client = _rate_limiter(settings, metrics)
        limiter.load_spent(await asyncio.to_thread(meter.spent_by_key))
        service = InferenceService(
            resolver, metrics, retry, limiter=limiter, meter=meter,
            max_in_flight=settings.max_in_flight_per_model, tracing=tracing,
            token_limits={m.name: _token_limits(settings, m) for m in models},
            inter_token_timeout_s=settings.inter_token_timeout_s,
        )  # fmt: skip
        model_dirs = supervisor.model_dirs if supervisor else {}
        keys = None
        if settings.admin_key is not None and settings.key_secret is not None:
            keys = KeyStore(database, settings.key_secret.get_secret_value())
            await keys.refresh()
        gateway = Gateway(
            settings, pools, metrics, service, adapters, model_dirs, app.state.lifecycle, keys
        )
        async with contextlib.AsyncExitStack() as stack:
            # Last: it waits for the connections that worker threads of the cancelled loops
            # still hold, and closes them (Database.close)
            stack.push_async_callback(asyncio.to_thread, database.close)
            stack.callback(tracing.shutdown)  # runs after the rest: flushes the final spans
            stack.push_async_callback(client.aclose)
            if redis_client is not None:
                stack.push_async_callback(redis_client.aclose)
            stack.push_async_callback(limiter.flush)  # before the Redis client closes
            await _register_declared(gateway)
            for model in models:
                if _wants_guard(settings, model, supervisor):
                    await asyncio.to_thread(_install_guard, gateway, model.name)
            await adapters.refresh(force=True)
            if supervisor is not None:
                await supervisor.start()
                stack.push_async_callback(supervisor.stop)
            tasks = [
                asyncio.create_task(
                    pool.watch_health(settings.health_interval_s, adapters.reconcile)
                )
                for pool in pools.values()
            ]
            tasks.append(asyncio.create_task(_watch_registry(gateway)))
            tasks.append(asyncio.create_task(announce_ready(pools, settings)))
            tasks.append(asyncio.create_task(meter.run(settings.usage_flush_interval_s)))
            tasks += [
                asyncio.create_task(_discover(pools[m.name], m, settings, client))
                for m in models
                if m.engine_discovery
            ]
            stack.push_async_callback(_cancel, tasks)
            yield {"gateway": gateway}
            gateway.lifecycle.draining = True

    app = FastAPI(
        title="lorafleet",
        version=__version__,
        description="OpenAI-compatible gateway for vLLM engines and LoRA adapters.",
        lifespan=lifespan,
        docs_url=None,  # served by routes/ops.py, behind the admin key when auth is on
        redoc_url=None,
        openapi_url=None,
    )
    app.state.lifecycle = Lifecycle()
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(adapter_routes.router)
    app.include_router(key_routes.router)
    app.include_router(key_routes.grants_router)
    app.include_router(usage_routes.router)
    app.include_router(ops.router)
    # Outermost last: the request id is set before anything else runs.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(HeaderLimitMiddleware)
    app.add_middleware(RequestIdMiddleware, tracing=tracing, access_log=settings.access_log)
    return app


def _token_limits(settings: Settings, model: ModelSpec) -> TokenLimits:
    """A base model's default and cap for max_tokens: its own, else the gateway-wide ones."""
    return TokenLimits(
        model.default_max_tokens or settings.default_max_tokens,
        model.max_tokens_cap or settings.max_tokens_cap,
    )


def _rate_limiter(
    settings: Settings, metrics: GatewayMetrics
) -> tuple[RateLimiter, redis.asyncio.Redis | None]:
    """Limits kept in this process, or shared by every replica through Redis (`redis_url`)."""
    if settings.redis_url is None:
        return LocalRateLimiter(), None
    client = connect(settings.redis_url)
    log.info("rate limits are shared through Redis (key prefix %s)", settings.redis_key_prefix)
    return RedisRateLimiter(client, metrics, prefix=settings.redis_key_prefix), client


def _wants_guard(settings: Settings, model: ModelSpec, supervisor: EngineSupervisor | None) -> bool:
    setting = model.base_guard or settings.base_guard
    if setting != "auto":
        return setting == "on"
    # Local CPU engines run from this install, so they get lorafleet's grouped LoRA ops, which
    # leave base rows alone (lorafleet/vllm_plugins/cpu_lora_ops.py); switched off, the guard
    # is needed.
    # Cluster engines may be GPUs or stock vLLM CPU images: opt in there.
    return (
        supervisor is not None
        and model.name in supervisor.lora_models()
        and not has_cuda_device()
        and not cpu_lora_ops.enabled()
    )


def _install_guard(gateway: Gateway, model_id: str) -> None:
    # In the shared adapter store, so engines in other pods can load it from the same path.
    base = next(b for b in gateway.registration_rules().bases if b.model_id == model_id)
    directory = gateway.settings.store_dir / "_base-guard" / base.model_id
    gateway.adapters.set_guard(
        base.model_id, write_guard_adapter(directory, base.info, base.model_id)
    )


async def _register_declared(gateway: Gateway) -> None:
    """Adapters named in the serve config: registered at start-up, idempotently (content that
    the alias already points to adds no version)."""
    if not gateway.settings.adapters:
        return
    rules = await asyncio.to_thread(gateway.registration_rules)
    for declared in gateway.settings.adapters:
        version = await asyncio.to_thread(
            register_adapter,
            gateway.adapters.registry,
            rules,
            declared.name,
            declared.source,
            declared.base_model,
        )
        log.info("adapter %s is registered (version %d)", declared.name, version.version)


async def _watch_registry(gateway: Gateway) -> None:
    """Follow key, grant and registry changes (possibly made by another gateway replica), and
    reconcile every engine replica when adapters change, and every `reconcile_interval_s`."""
    settings = gateway.settings
    last = time.monotonic()

    async def poll() -> None:
        nonlocal last
        if gateway.keys is not None:  # keys and grants have their own generation; a failed
            await survive("key refresh", gateway.keys.refresh)  # one keeps the last good ones
        changed = await gateway.adapters.refresh()
        if changed or time.monotonic() - last >= settings.reconcile_interval_s:
            last = time.monotonic()
            for pool in gateway.pools.values():
                for replica in pool.replicas:
                    reconcile = partial(gateway.adapters.reconcile, replica)
                    await survive(f"reconcile {replica.url}", reconcile)

    while True:
        await asyncio.sleep(settings.registry_poll_s)
        await survive("registry watch", poll)


async def _discover(
    pool: EnginePool, model: ModelSpec, settings: Settings, client: HttpClient
) -> None:
    """Resolve one model's headless Service names to pod IPs, now and every
    `discovery_interval_s` (each base model has its own Service: pools never mix)."""

    async def discover() -> None:
        resolved = [await _resolve(name) for name in model.engine_discovery]
        urls = sorted({url for found in resolved for url in found or ()} | set(model.engine_urls))
        # A DNS hiccup (None) keeps the current replicas rather than dropping them all.
        if None not in resolved and urls != sorted(r.url for r in pool.replicas):
            log.info("engine replicas for %s: %s", pool.base_model, ", ".join(urls) or "none")
            lora = settings.engine_enable_lora
            pool.set_engines(
                [engine_client(model.engine_kind, url, client, lora=lora) for url in urls]
            )

    while True:
        await survive("engine discovery", discover)
        await asyncio.sleep(settings.discovery_interval_s)


async def _resolve(name: str) -> list[str] | None:
    host, _, port = name.rpartition(":")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=1)
    except OSError as exc:
        log.warning("cannot resolve %s: %s", name, exc)
        return None
    return [
        f"http://[{info[4][0]}]:{port}" if ":" in str(info[4][0]) else f"http://{info[4][0]}:{port}"
        for info in infos
    ]


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
