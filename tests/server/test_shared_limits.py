"""Rate limits shared by gateway replicas through the machine's real Redis.

Two `RedisRateLimiter`s on two clients stand for two gateway replicas; the gateway tests run two
apps. Tests marked `requires_redis` are skipped only when nothing answers on 127.0.0.1:6379; the
two that point the limiter at a closed port need no Redis at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lorafleet.server import shared_limits
from lorafleet.server.app import create_app
from lorafleet.server.errors import RateLimitError
from lorafleet.server.keys import ApiKey
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.settings import Settings
from lorafleet.server.shared_limits import RedisRateLimiter, connect
from tests.fake_vllm import MODEL, FakeVLLM
from tests.redis_server import REDIS_PORT, REDIS_URL, closed_port, key_prefix, requires_redis
from tests.server.conftest import wait_ready
from tests.tcp_proxy import TcpProxy

ADMIN = {"Authorization": "Bearer admin-key-0123456789abcdef"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def api_key(**limits: Any) -> ApiKey:
    fields: dict[str, Any] = {"rpm": None, "tpm": None, "budget_tokens": None, **limits}
    return ApiKey(
        key_id="k1", key_hash="-", tenant="acme", created_at=0.0, revoked_at=None, **fields
    )


@pytest.fixture
def prefix() -> Iterator[str]:
    with key_prefix() as prefix:
        yield prefix


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[tuple[RedisRateLimiter, RedisRateLimiter]]:
    """Two limiters with their own clients: what two gateway replicas hold."""
    clients = [connect(REDIS_URL), connect(REDIS_URL)]
    one, two = (RedisRateLimiter(c, GatewayMetrics(), prefix=prefix) for c in clients)
    yield one, two
    for limiter, client in zip((one, two), clients, strict=True):
        await limiter.flush()
        await client.aclose()


# --- two replicas, one limit ------------------------------------------------------------------


@requires_redis
async def test_two_replicas_enforce_one_rpm_limit(
    replicas: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    key = api_key(rpm=5)
    for i in range(5):
        await replicas[i % 2].acquire(key, 1)
    for limiter in replicas:
        with pytest.raises(RateLimitError) as refused:
            await limiter.acquire(key, 1)
        assert 0 < refused.value.retry_after_s <= 12  # one request refills in 60/5 s
        assert refused.value.code == "rate_limit_exceeded"
        assert int(refused.value.headers["Retry-After"]) >= 1
        assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"


@requires_redis
async def test_unused_reserved_tokens_go_back_to_the_shared_bucket(
    replicas: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    one, two = replicas
    key = api_key(tpm=100)
    reservation = await one.acquire(key, 80)
    with pytest.raises(RateLimitError):
        await two.acquire(key, 30)  # 20 left
    one.settle(reservation, 10)  # 70 unused
    assert one.headers(key)["x-ratelimit-remaining-tokens"] == "90"
    await one.flush()
    await two.acquire(key, 30)
    assert 59 <= int(two.headers(key)["x-ratelimit-remaining-tokens"]) <= 61


@requires_redis
async def test_tokens_used_beyond_the_reservation_are_taken_from_the_shared_bucket(
    replicas: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    one, two = replicas
    key = api_key(tpm=6000, budget_tokens=10_000)
    reservation = await one.acquire(key, 100)
    one.settle(reservation, 5900)  # the engine reported far more than was reserved
    await one.flush()
    with pytest.raises(RateLimitError):
        await two.acquire(key, 500)  # about 100 left in the bucket, not 5900
    assert one.budget_left(key) == 10_000 - 5900


@requires_redis
async def test_a_refused_key_recovers_after_the_wait(
    replicas: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    one, two = replicas
    key = api_key(tpm=6000)  # 100 tokens a second
    await one.acquire(key, 6000)
    with pytest.raises(RateLimitError) as refused:
        await two.acquire(key, 100)
    assert 0.9 <= refused.value.retry_after_s <= 1.1
    await asyncio.sleep(refused.value.retry_after_s + 0.05)
    await two.acquire(key, 100)


@requires_redis
async def test_budget_is_shared_and_floored_by_the_usage_table(
    replicas: tuple[RedisRateLimiter, RedisRateLimiter],
) -> None:
    one, two = replicas
    key = api_key(budget_tokens=100)
    one.load_spent({"k1": 30})  # from the usage table; `two` started before it was written
    reservation = await one.acquire(key, 50)
    with pytest.raises(RateLimitError) as refused:
        await two.acquire(key, 30)  # 30 spent + 50 in flight on the other replica + 30
    assert refused.value.code == "budget_exceeded"
    one.settle(reservation, 40)
    await one.flush()
    await two.acquire(key, 30)  # 70 spent + 30 = the whole budget
    assert two.headers(key)["x-lorafleet-budget-remaining-tokens"] == "0"
    with pytest.raises(RateLimitError):
        await one.acquire(key, 1)


@requires_redis
async def test_a_dead_replicas_reservation_expires(
    replicas: tuple[RedisRateLimiter, RedisRateLimiter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_limits, "RESERVATION_TTL_S", 1)
    one, two = replicas
    key = api_key(budget_tokens=100)
    await one.acquire(key, 90)  # and `one` is never heard of again
    with pytest.raises(RateLimitError):
        await two.acquire(key, 20)
    await asyncio.sleep(1.1)
    await two.acquire(key, 20)


@requires_redis
async def test_idle_keys_vanish(
    replicas: tuple[RedisRateLimiter, RedisRateLimiter], prefix: str
) -> None:
    one, _ = replicas
    reservation = await one.acquire(api_key(rpm=10, tpm=1000, budget_tokens=10_000), 100)
    one.settle(reservation, 50)
    await one.flush()
    with redis.Redis.from_url(REDIS_URL) as client:
        ttls = {
            key.decode().rsplit(":", 1)[1]: client.ttl(key) for key in client.keys(f"{prefix}:*")
        }
    assert 0 < ttls["rpm"] <= 61 and 0 < ttls["tpm"] <= 61  # the time to refill
    assert ttls["spent"] == -1  # no expiry: the usage table's running total
    assert "reserved" not in ttls  # settled: the in-flight set is empty, so gone


# --- Redis unreachable --------------------------------------------------------------------------


async def test_store_down_fails_open_on_rates_but_keeps_budgets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = connect(f"redis://127.0.0.1:{closed_port()}/0")
    metrics = GatewayMetrics()
    limiter = RedisRateLimiter(client, metrics, prefix="unused")
    try:
        with caplog.at_level(logging.WARNING, logger="lorafleet.server.shared_limits"):
            for _ in range(3):  # rpm 1: only the first would pass a working limiter
                limiter.settle(await limiter.acquire(api_key(rpm=1), 10), 5)
        assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
        assert metrics.registry.get_sample_value("lorafleet:rate_limit_fail_open_total") == 3

        limiter.load_spent({"k1": 95})
        with pytest.raises(RateLimitError) as refused:
            await limiter.acquire(api_key(budget_tokens=100), 10)
        assert refused.value.code == "budget_exceeded"
        await asyncio.wait_for(limiter.flush(), 2)  # nothing to wait for while it is down
    finally:
        await client.aclose()


@requires_redis
async def test_settles_made_during_an_outage_arrive_afterwards(prefix: str) -> None:
    proxy = TcpProxy(REDIS_PORT)
    proxy.start()
    client = connect(f"redis://127.0.0.1:{proxy.port}/0")
    limiter = RedisRateLimiter(client, GatewayMetrics(), prefix=prefix, retry_s=0.1)
    key = api_key(budget_tokens=1000)
    try:
        reservation = await limiter.acquire(key, 100)
        proxy.cut()
        limiter.settle(reservation, 40)
        await limiter.flush()  # fails: kept
        proxy.start()
        await asyncio.sleep(0.15)
        await limiter.acquire(key, 1)  # the store answers again: the kept settle goes out
        await limiter.flush()
        with redis.Redis.from_url(REDIS_URL) as direct:
            assert direct.get(f"{prefix}:{{k1}}:spent") == b"40"
            # The outage's reservation was removed too: only the last acquire is in flight.
            assert direct.zcard(f"{prefix}:{{k1}}:reserved") == 1
    finally:
        await client.aclose()
        proxy.cut()


# --- through the gateway ----------------------------------------------------------------------


def secured(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(
        update={
            "admin_key": SecretStr("admin-key-0123456789abcdef"),
            "key_secret": SecretStr("k" * 40),
            **update,
        }
    )


def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@requires_redis
def test_two_gateways_share_one_limit(settings: Settings, prefix: str) -> None:
    # One registry (the same SQLite file) and one Redis: two replicas of one deployment.
    shared = secured(settings, redis_url=REDIS_URL, redis_key_prefix=prefix)
    with ExitStack() as stack:
        gateways = [
            stack.enter_context(TestClient(create_app(shared, transport=FakeVLLM().transport())))
            for _ in range(2)
        ]
        for gateway in gateways:
            wait_ready(gateway)
        created = gateways[0].post("/v1/keys", json={"tenant": "acme", "rpm": 3}, headers=ADMIN)
        headers = {"Authorization": f"Bearer {created.json()['key']}"}
        wait_for(lambda: gateways[1].get("/v1/models", headers=headers).status_code == 200)

        answers = [
            gateways[i % 2].post("/v1/chat/completions", json=CHAT, headers=headers)
            for i in range(4)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == [
            "2", "1", "0", "0",
        ]  # fmt: skip
        limited = answers[-1]
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(limited.headers["retry-after"]) <= 20
        assert limited.headers["x-ratelimit-limit-requests"] == "3"


def test_gateway_admits_requests_when_redis_is_down(settings: Settings) -> None:
    down = secured(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    with TestClient(create_app(down, transport=FakeVLLM().transport())) as client:
        wait_ready(client)
        created = client.post("/v1/keys", json={"tenant": "acme", "rpm": 1}, headers=ADMIN)
        headers = {"Authorization": f"Bearer {created.json()['key']}"}
        for _ in range(3):
            assert (
                client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
            )
        metrics = client.get("/metrics", headers=ADMIN).text
        assert "lorafleet:rate_limit_fail_open_total 3.0" in metrics
