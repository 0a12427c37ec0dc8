"""One inference request on its way through the gateway, as one object.

`InferenceService.handle` (serving.py) builds an `InferenceRequest` once the model is resolved
and hands it whole to each step (admission, the context check, placement, the answer or the
stream relay), instead of six loose values per call. It holds what was asked (endpoint, body,
stream flags), where it goes (the target, and the replica, chosen once), who pays (the
`Account`), and the log/trace fields it fills in as it goes (`server/context.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lorafleet.server.context import RequestContext
from lorafleet.server.engine.base import Endpoint
from lorafleet.server.engine.pool import Replica
from lorafleet.server.keys import Principal
from lorafleet.server.limits import RateLimiter, Reservation
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.request_target import Target
from lorafleet.server.token_limits import TokenLimits
from lorafleet.server.usage import UsageMeter


@dataclass
class Account:
    """Who pays for one request: holds its rate-limit reservation, then settles it and meters
    the engine's usage exactly once when the request ends. A request that sent nothing refunds
    it all; a stream that ended early (client gone, engine broke) before the engine's usage
    arrived pays `prompt_estimate` plus one token per event relayed (`sent`)."""

    who: Principal
    label: str
    limiter: RateLimiter | None
    meter: UsageMeter | None
    reservation: Reservation | None = None
    closed: bool = False
    prompt_estimate: int = 0
    sent: int = 0
    release: Callable[[], None] = field(default=lambda: None)  # unpins the resolved adapter

    def close_early(self) -> None:
        """The request ended without the engine's usage report (no-op when it had one)."""
        if self.sent:
            self.close(self.prompt_estimate, self.sent)
        else:
            self.close()

    def close(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        if self.closed:
            return
        self.closed = True
        self.release()
        if self.limiter is not None and self.reservation is not None:
            self.limiter.settle(self.reservation, prompt_tokens + completion_tokens)
        if self.meter is not None and (prompt_tokens or completion_tokens):
            key_id = self.who.key.key_id if self.who.key else "-"
            self.meter.record(self.who.tenant, key_id, self.label, prompt_tokens, completion_tokens)


@dataclass
class InferenceRequest:
    """Everything one request carries from admission to its last byte."""

    endpoint: Endpoint
    body: dict[str, Any]  # what the engine is sent: declared fields, `model` the engine's name
    target: Target
    label: str  # the bounded metrics label for `target.label`
    account: Account
    request_id: str
    started: float  # perf_counter() when the route got it
    stream: bool
    wants_usage: bool  # the client asked for the usage chunk (the engine is always asked)
    limits: TokenLimits
    log: RequestContext | None = None  # what log lines and traces say about the request
    replica: Replica | None = None  # chosen once; a retry moves it to another replica
    tried: set[str] = field(default_factory=set)  # replicas an attempt already went to

    @property
    def who(self) -> Principal:
        return self.account.who

    def choose(self, replica: Replica) -> Replica:
        self.replica = replica
        if self.log is not None:
            self.log.replica = replica.url
        return replica

    def record_usage(self, usage: Any, metrics: GatewayMetrics) -> None:
        """The engine's usage report: into the metrics and the log line, then settle the bill."""
        if not isinstance(usage, dict):
            return
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        metrics.record_usage(self.label, prompt, completion, self.who.tenant)
        if self.log is not None:
            self.log.prompt_tokens, self.log.completion_tokens = prompt, completion
        self.account.close(prompt, completion)
