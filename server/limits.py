"""Per-key limits: requests per minute, tokens per minute, and a token budget.

Token buckets refill continuously (`rpm/60` requests and `tpm/60` tokens per second). A request
reserves its worst case up front (an estimate of the prompt plus `max_tokens`, or the model's
context when unset), so a burst cannot overshoot, and is settled from the engine's `usage` when
it ends: unused tokens go back. The budget counts settled tokens (persisted in the usage table
and reloaded at start) plus reservations in flight.

State is per gateway process; with several gateway replicas each enforces the limits on the
traffic it sees (a shared Redis bucket is the next step where that matters).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from lorafleet.server.errors import RateLimitError
from lorafleet.server.keys import ApiKey


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


@dataclass(frozen=True)
class Reservation:
    key_id: str
    tokens: int


class RateLimiter:
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

    def acquire(self, key: ApiKey, tokens: int) -> Reservation:
        """Take one request and `tokens` from the key's buckets, or raise a 429."""
        state = self._for(key)
        now = time.monotonic()
        if (
            key.budget_tokens is not None
            and state.spent + state.reserved + tokens > key.budget_tokens
        ):
            raise RateLimitError(
                f"token budget of {key.budget_tokens} is used up "
                f"({state.spent} spent, {state.reserved} in flight)",
                retry_after_s=3600,
                code="budget_exceeded",
            )
        waits = []
        for bucket, amount in ((state.requests, 1), (state.tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                waits.append(bucket.wait_for(amount))
        wait = max(waits, default=0.0)
        if wait > 0:
            raise RateLimitError(
                f"rate limit reached for key {key.key_id} "
                f"(rpm {key.rpm or '-'}, tpm {key.tpm or '-'}); retry in {math.ceil(wait)}s",
                retry_after_s=max(1.0, wait),
            )
        if state.requests is not None:
            state.requests.level -= 1
        if state.tokens is not None:
            state.tokens.level -= min(tokens, state.tokens.capacity)
        state.reserved += tokens
        return Reservation(key.key_id, tokens)

    def settle(self, reservation: Reservation, used: int) -> None:
        """The request ended having used `used` tokens: refund the rest of the reservation."""
        state = self._state.get(reservation.key_id)
        if state is None:
            return
        state.reserved -= reservation.tokens
        state.spent += used
        if state.tokens is not None:
            refund = max(0, min(reservation.tokens, state.tokens.capacity) - used)
            state.tokens.level = min(state.tokens.capacity, state.tokens.level + refund)

    def headers(self, key: ApiKey) -> dict[str, str]:
        """OpenAI-style `x-ratelimit-*` headers for the key's current state."""
        state = self._for(key)
        headers = {}
        if key.rpm and state.requests is not None:
            headers["x-ratelimit-limit-requests"] = str(key.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, int(state.requests.level)))
        if key.tpm and state.tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(key.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, int(state.tokens.level)))
        if key.budget_tokens is not None:
            remaining = key.budget_tokens - state.spent - state.reserved
            headers["x-lorafleet-budget-remaining-tokens"] = str(max(0, remaining))
        return headers
