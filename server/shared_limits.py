"""Per-key limits shared by every gateway replica, kept in Redis (`redis_url`).

One Lua script per operation, so each is atomic and one round trip:
- acquire: refill the key's rpm and tpm buckets to the server's clock (`TIME`, so replica clocks
  never matter), check the budget, then take one request and the reserved tokens, or answer how
  long to wait;
- settle: add the used tokens to the key's spent counter (INCRBY), drop the reservation from
  the budget's in-flight set, and refund the unused tokens to the tpm bucket (or take the
  tokens used beyond the reservation from it).

Keys, per API key (the `{key id}` hash tag keeps them in one Redis Cluster slot):

    <prefix>:{<key id>}:rpm, :tpm     hash {level, stamp}; TTL 61 s, the time to refill: an
                                      idle bucket vanishes and a missing bucket is a full one
    <prefix>:{<key id>}:spent         settled tokens (budget); no TTL, one per key
    <prefix>:{<key id>}:reserved      sorted set of in-flight reservations `<ticket>:<tokens>`
                                      scored by expiry (1 h), so a replica that dies mid-request
                                      cannot hold budget forever

The usage table stays the source of truth for budgets: `load_spent` (at start) gives each key a
floor, and the acquire script raises the shared counter to it when it is lower (Redis new,
flushed or restarted). The counter never exceeds what was really settled, so taking the larger
of the two never double counts.

Redis unreachable: requests are admitted without the rpm/tpm check (fail-open: refusing all
traffic because the limiter's store is down is worse than briefly unmetered bursts), with one
warning per outage and `lorafleet:rate_limit_fail_open_total` counting them; budgets are still
checked, against this replica's last view of the shared counters plus its own traffic since.
After a failure Redis is left alone for `retry_s` (no timeout paid per request); settles that
could not be sent are kept and sent once it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from lorafleet.server.keys import ApiKey
from lorafleet.server.limits import (
    RateLimiter,
    Reservation,
    budget_exceeded,
    rate_limited,
    ratelimit_headers,
)
from lorafleet.server.metrics import GatewayMetrics

log = logging.getLogger(__name__)

RESERVATION_TTL_S = 3600  # longest a request may hold budget before it is forgotten
STORE_ERRORS = (RedisError, OSError)

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local budget, floor, ticket = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local ttl = tonumber(ARGV[7])

local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
if spent < floor then
  redis.call('SET', KEYS[3], floor)
  spent = floor
end
local reserved = 0
if budget >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, member in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    reserved = reserved + tonumber(string.match(member, ':(%d+)$'))
  end
  if spent + reserved + tokens > budget then
    return {'budget', tostring(spent), tostring(reserved)}
  end
end

local function level(key, capacity)
  local state = redis.call('HMGET', key, 'level', 'stamp')
  if not state[1] then
    return capacity
  end
  return math.min(capacity, tonumber(state[1]) + (now - tonumber(state[2])) * capacity / 60)
end
local requests, tokens_left, wait = rpm, tpm, 0
if rpm > 0 then
  requests = level(KEYS[1], rpm)
  wait = math.max(wait, (1 - requests) * 60 / rpm)
end
if tpm > 0 then
  tokens_left = level(KEYS[2], tpm)
  wait = math.max(wait, (math.min(tokens, tpm) - tokens_left) * 60 / tpm)
end
if wait > 0 then
  return {'wait', tostring(wait), tostring(requests), tostring(tokens_left)}
end
if rpm > 0 then
  requests = requests - 1
  redis.call('HSET', KEYS[1], 'level', tostring(requests), 'stamp', tostring(now))
  redis.call('PEXPIRE', KEYS[1], 61000)
end
if tpm > 0 then
  tokens_left = tokens_left - math.min(tokens, tpm)
  redis.call('HSET', KEYS[2], 'level', tostring(tokens_left), 'stamp', tostring(now))
  redis.call('PEXPIRE', KEYS[2], 61000)
end
if budget >= 0 then
  redis.call('ZADD', KEYS[4], now + ttl, ticket .. ':' .. tokens)
  redis.call('EXPIRE', KEYS[4], ttl)
  reserved = reserved + tokens
end
return {'ok', tostring(requests), tostring(tokens_left), tostring(spent), tostring(reserved)}
"""

_SETTLE = """
local tpm, refund, used = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if used > 0 then
  redis.call('INCRBY', KEYS[2], used)
end
if #ARGV > 3 then
  redis.call('ZREM', KEYS[3], unpack(ARGV, 4))
end
if tpm > 0 and refund ~= 0 then
  local state = redis.call('HMGET', KEYS[1], 'level', 'stamp')
  if state[1] then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    local level = tonumber(state[1]) + (now - tonumber(state[2])) * tpm / 60 + refund
    redis.call('HSET', KEYS[1], 'level', tostring(math.min(tpm, level)), 'stamp', tostring(now))
    redis.call('PEXPIRE', KEYS[1], 61000)
  end
end
return 1
"""


def connect(url: str, timeout_s: float = 0.25) -> redis.asyncio.Redis:
    """A client for the limiter: short timeouts and one immediate retry (a dropped idle
    connection), since every request waits on it and an outage means fail-open anyway."""
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=1),
    )
    return client


@dataclass
class _Seen:
    """This replica's view of one key: the store's last answer, plus its own traffic since."""

    requests: float | None = None  # None: not known, taken as a full bucket
    tokens: float | None = None
    spent: int = 0
    reserved: int = 0


@dataclass
class _Unsent:
    """Settles the store did not get yet, merged per key."""

    used: int = 0
    tickets: list[str] = field(default_factory=list)


class RedisRateLimiter(RateLimiter):
    def __init__(
        self,
        client: redis.asyncio.Redis,
        metrics: GatewayMetrics,
        *,
        prefix: str = "lorafleet",
        retry_s: float = 1.0,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._retry_s = retry_s
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)
        self._floor: dict[str, int] = {}
        self._seen: dict[str, _Seen] = {}
        self._unsent: dict[str, _Unsent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._down_until: float | None = None  # monotonic time; None: the store answers
        self.fail_open = Counter(
            "lorafleet:rate_limit_fail_open",
            "Requests admitted without the shared rpm/tpm check: the Redis store was unreachable.",
            registry=metrics.registry,
        )

    def _keys(self, key_id: str) -> list[str]:
        base = f"{self._prefix}:{{{key_id}}}"
        return [f"{base}:rpm", f"{base}:tpm", f"{base}:spent", f"{base}:reserved"]

    def _view(self, key_id: str) -> _Seen:
        seen = self._seen.get(key_id)
        if seen is None:
            seen = self._seen[key_id] = _Seen(spent=self._floor.get(key_id, 0))
        return seen

    def load_spent(self, spent_by_key: dict[str, int]) -> None:
        self._floor.update(spent_by_key)
        for key_id, spent in spent_by_key.items():
            seen = self._view(key_id)
            seen.spent = max(seen.spent, spent)

    # --- acquire -----------------------------------------------------------------------------
    async def acquire(self, key: ApiKey, tokens: int) -> Reservation:
        if self._ask_store():
            ticket = uuid.uuid4().hex if key.budget_tokens is not None else None
            budget = -1 if key.budget_tokens is None else key.budget_tokens
            floor = self._floor.get(key.key_id, 0)
            args: list[str | int] = [key.rpm or 0, key.tpm or 0, tokens, budget, floor]
            try:
                reply = await self._acquire(
                    keys=self._keys(key.key_id), args=[*args, ticket or "", RESERVATION_TTL_S]
                )
            except STORE_ERRORS as exc:
                self._store_failed(exc)
            else:
                self._store_answered()
                return self._taken(key, tokens, ticket, [_text(part) for part in reply])
        return self._admit_unchecked(key, tokens)

    def _taken(self, key: ApiKey, tokens: int, ticket: str | None, reply: list[str]) -> Reservation:
        """Read the script's answer: the reservation, or the 429 it calls for."""
        seen = self._view(key.key_id)
        outcome, *numbers = reply
        if outcome == "budget":
            seen.spent, seen.reserved = int(numbers[0]), int(numbers[1])
            budget_exceeded(key, seen.spent, seen.reserved, self.headers(key))
        if outcome == "wait":
            wait, requests, tokens_left = (float(n) for n in numbers)
            self._see_levels(key, seen, requests, tokens_left)
            rate_limited(key, wait, self.headers(key))
        self._see_levels(key, seen, float(numbers[0]), float(numbers[1]))
        seen.spent, seen.reserved = int(numbers[2]), int(numbers[3])
        return Reservation(key.key_id, tokens, key.tpm or 0, ticket)

    @staticmethod
    def _see_levels(key: ApiKey, seen: _Seen, requests: float, tokens: float) -> None:
        seen.requests = requests if key.rpm else None
        seen.tokens = tokens if key.tpm else None

    def _admit_unchecked(self, key: ApiKey, tokens: int) -> Reservation:
        """The store is away: no rpm/tpm check; the budget against this replica's view."""
        seen = self._view(key.key_id)
        if key.budget_tokens is not None and (
            seen.spent + seen.reserved + tokens > key.budget_tokens
        ):
            budget_exceeded(key, seen.spent, seen.reserved, self.headers(key))
        self.fail_open.inc()
        seen.reserved += tokens
        return Reservation(key.key_id, tokens)  # no tpm: nothing was taken from the store

    # --- settle ------------------------------------------------------------------------------
    def settle(self, reservation: Reservation, used: int) -> None:
        seen = self._view(reservation.key_id)
        seen.reserved = max(0, seen.reserved - reservation.tokens)
        seen.spent += used
        refund = min(reservation.tokens, reservation.tpm) - used  # < 0: used beyond it
        if seen.tokens is not None and reservation.tpm:
            seen.tokens = min(float(reservation.tpm), seen.tokens + refund)
        tickets = [f"{reservation.ticket}:{reservation.tokens}"] if reservation.ticket else []
        self._spawn(self._send_settle(reservation.key_id, reservation.tpm, refund, used, tickets))

    async def _send_settle(
        self, key_id: str, tpm: int, refund: int, used: int, tickets: list[str]
    ) -> None:
        unsent = self._unsent.pop(key_id, _Unsent())
        unsent.used += used
        unsent.tickets += tickets
        if not unsent.used and not unsent.tickets and not refund:
            return
        if self._ask_store():
            try:
                await self._settle(
                    keys=self._keys(key_id)[1:],
                    args=[tpm, refund, unsent.used, *unsent.tickets],
                )
            except STORE_ERRORS as exc:
                self._store_failed(exc)
            else:
                self._store_answered()
                return
        # Kept for later; a late refund would be stale, so only the spend and tickets are.
        kept = self._unsent.setdefault(key_id, _Unsent())
        kept.used += unsent.used
        kept.tickets += unsent.tickets

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        for key_id in list(self._unsent):
            await self._send_settle(key_id, 0, 0, 0, [])
        if self._unsent:
            log.warning("settles of %d keys are not in Redis yet (kept)", len(self._unsent))

    # --- the store's health ------------------------------------------------------------------
    def _ask_store(self) -> bool:
        """Always while Redis answers; after a failure, one caller probes every `retry_s` and
        the others carry on without it (nobody else waits for a timeout meanwhile)."""
        if self._down_until is None:
            return True
        now = time.monotonic()
        if now < self._down_until:
            return False
        self._down_until = now + self._retry_s
        return True

    def _store_failed(self, exc: BaseException) -> None:
        if self._down_until is None:
            log.warning(
                "rate-limit store (Redis) unreachable: %s; admitting requests without the "
                "rpm/tpm check, budgets checked against this replica's view",
                exc,
            )
        self._down_until = time.monotonic() + self._retry_s

    def _store_answered(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            log.info("rate-limit store (Redis) answers again")
            for key_id in list(self._unsent):  # what could not be sent meanwhile
                self._spawn(self._send_settle(key_id, 0, 0, 0, []))

    def budget_left(self, key: ApiKey) -> int | None:
        if key.budget_tokens is None:
            return None
        seen = self._view(key.key_id)  # the store's last answer plus this replica's traffic
        return max(0, key.budget_tokens - seen.spent - seen.reserved)

    # --- headers -----------------------------------------------------------------------------
    def headers(self, key: ApiKey) -> dict[str, str]:
        seen = self._view(key.key_id)
        return ratelimit_headers(key, seen.requests, seen.tokens, seen.spent, seen.reserved)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
