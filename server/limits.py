"""Per-key limits: requests per minute, tokens per minute, and a token budget.

    RateLimiter                  the interface the serving code uses
     ├── LocalRateLimiter        state in this process (the default)
     └── RedisRateLimiter        state in Redis, shared by every gateway replica
                                 (shared_limits.py, chosen when `redis_url` is set)

Token buckets refill continuously (`rpm/60` requests and `tpm/60` tokens per second). A request
reserves its worst case up front (serving.py: an estimate of the prompt plus the completion cap
for every choice), so a burst cannot overshoot, and is settled from the engine's `usage` when it
ends: unused tokens go back, tokens used beyond the reservation are taken from the tpm bucket
too. The budget counts settled tokens (persisted in the usage table and reloaded at start) plus
reservations in flight.

`LocalRateLimiter` keeps that state per process: with N gateway replicas each enforces the
limits on the traffic it sees, so a tenant gets up to N times its limit. `RedisRateLimiter` keeps
it in Redis, where the replicas share it.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NoReturn

from lorafleet.server.errors import RateLimitError
from lorafleet.server.keys import ApiKey


@dataclass(frozen=True)
class Reservation:
    """What `acquire` took for one request, handed back to `settle` when it ends."""

    key_id: str
    tokens: int
    tpm: int = 0  # tokens-per-minute capacity the tokens were taken from (0: none to refund)
    ticket: str | None = None  # the shared limiter's id for it in the budget's in-flight set


class RateLimiter(ABC):
    """Per-key rpm/tpm buckets and token budgets. `acquire` may wait on a shared store;
    `settle` and `headers` never do (a shared implementation sends settles in the background
    and answers headers from what the store last told it)."""

    @abstractmethod
    def load_spent(self, spent_by_key: dict[str, int]) -> None:
        """Tokens each key spent so far, from the persisted usage table (at start-up)."""

    @abstractmethod
    async def acquire(self, key: ApiKey, tokens: int) -> Reservation:
        """Take one request and `tokens` from the key's buckets, or raise a 429."""

    @abstractmethod
    def settle(self, reservation: Reservation, used: int) -> None:
        """The request ended having used `used` tokens: refund the rest of the reservation, or
        take what it used beyond it from the tpm bucket (which may go below zero)."""

    @abstractmethod
    def budget_left(self, key: ApiKey) -> int | None:
        """Tokens the key's budget has left after what is spent and reserved (None: no budget)."""

    @abstractmethod
    def headers(self, key: ApiKey) -> dict[str, str]:
        """OpenAI-style `x-ratelimit-*` headers for the key's current state."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait for work still on its way to a shared store (at shutdown, and in tests)."""


def ratelimit_headers(
    key: ApiKey, requests: float | None, tokens: float | None, spent: int, reserved: int
) -> dict[str, str]:
    """The headers for a key whose buckets hold `requests` and `tokens` (None: full)."""
    headers = {}
    if key.rpm:
        remaining = key.rpm if requests is None else requests
        headers["x-ratelimit-limit-requests"] = str(key.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, int(remaining)))
    if key.tpm:
        remaining = key.tpm if tokens is None else tokens
        headers["x-ratelimit-limit-tokens"] = str(key.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, int(remaining)))
    if key.budget_tokens is not None:
        headers["x-lorafleet-budget-remaining-tokens"] = str(
            max(0, key.budget_tokens - spent - reserved)
        )
    return headers


def budget_exceeded(key: ApiKey, spent: int, reserved: int, headers: dict[str, str]) -> NoReturn:
    raise RateLimitError(
        f"token budget of {key.budget_tokens} is used up ({spent} spent, {reserved} in flight)",
        retry_after_s=3600,
        code="budget_exceeded",
        headers=headers,
    )


def rate_limited(key: ApiKey, wait_s: float, headers: dict[str, str]) -> NoReturn:
    raise RateLimitError(
        f"rate limit reached for key {key.key_id} "
        f"(rpm {key.rpm or '-'}, tpm {key.tpm or '-'}); retry in {math.ceil(wait_s)}s",
        retry_after_s=max(1.0, wait_s),
        headers=headers,
    )


@dataclass
class Bucket:
    capacity: float
    per_second: float
    level: float
    stamp: float = field(default_factory=time.monotonic)

    @classmethod
    def per_minute(cls, amount: int) -> Bucket:
        return cls(capacity=float(amount), per_second=amount / 60.0, level=float(amount))

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.per_second)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it is now)."""
        missing = min(amount, self.capacity) - self.level
        return 0.0 if missing <= 0 else missing / self.per_second


@dataclass
class KeyState:
    requests: Bucket | None
    tokens: Bucket | None
    spent: int = 0  # settled tokens against the budget
    reserved: int = 0


class LocalRateLimiter(RateLimiter):
    """The limits kept in this process's memory."""

    def __init__(self) -> None:
        self._state: dict[str, KeyState] = {}

    def load_spent(self, spent_by_key: dict[str, int]) -> None:
        for key_id, spent in spent_by_key.items():
            self._state.setdefault(key_id, KeyState(None, None)).spent = spent

    def _for(self, key: ApiKey) -> KeyState:
        state = self._state.get(key.key_id)
        if (
            state is None
            or (state.requests is None and key.rpm)
            or (state.tokens is None and key.tpm)
        ):
            spent = state.spent if state else 0
            state = KeyState(
                Bucket.per_minute(key.rpm) if key.rpm else None,
                Bucket.per_minute(key.tpm) if key.tpm else None,
                spent,
            )
            self._state[key.key_id] = state
        return state

    async def acquire(self, key: ApiKey, tokens: int) -> Reservation:
        state = self._for(key)
        now = time.monotonic()
        if (
            key.budget_tokens is not None
            and state.spent + state.reserved + tokens > key.budget_tokens
        ):
            budget_exceeded(key, state.spent, state.reserved, self.headers(key))
        waits = []
        for bucket, amount in ((state.requests, 1), (state.tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                waits.append(bucket.wait_for(amount))
        wait = max(waits, default=0.0)
        if wait > 0:
            rate_limited(key, wait, self.headers(key))
        if state.requests is not None:
            state.requests.level -= 1
        if state.tokens is not None:
            state.tokens.level -= min(tokens, state.tokens.capacity)
        state.reserved += tokens
        return Reservation(key.key_id, tokens, key.tpm or 0)

    def settle(self, reservation: Reservation, used: int) -> None:
        state = self._state.get(reservation.key_id)
        if state is None:
            return
        state.reserved -= reservation.tokens
        state.spent += used
        if state.tokens is not None:
            refund = min(reservation.tokens, state.tokens.capacity) - used
            state.tokens.level = min(state.tokens.capacity, state.tokens.level + refund)

    def budget_left(self, key: ApiKey) -> int | None:
        if key.budget_tokens is None:
            return None
        state = self._for(key)
        return max(0, key.budget_tokens - state.spent - state.reserved)

    async def flush(self) -> None:
        return None  # nothing is ever on its way: every change is made in place

    def headers(self, key: ApiKey) -> dict[str, str]:
        state = self._for(key)
        return ratelimit_headers(
            key,
            state.requests.level if state.requests is not None else None,
            state.tokens.level if state.tokens is not None else None,
            state.spent,
            state.reserved,
        )
