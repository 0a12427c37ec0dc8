"""Inference: resolve the requested model, admit the request, pick a replica, relay the answer.

The request body is validated by the protocol models, rebuilt from declared fields only, and
sent with `model` set to the name the engine knows. Answers pass through as bytes: non-streamed
JSON untouched, streamed SSE events one by one as they arrive (no buffering or coalescing). The
gateway always asks the engine for usage so it can meter; a client that did not ask for
`stream_options.include_usage` never sees the usage chunk.

One request travels as one `InferenceRequest` (request_state.py); where it goes is a `Target`
(request_target.py, which also holds every base-guard special case); a stream is relayed by
request_relay.py. A replica is chosen once per attempt: the context check's token count and
the first attempt use the same one, and only a retry moves the request elsewhere.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
from starlette.responses import Response
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from lorafleet.server import context as request_context
from lorafleet.server.engine.base import Endpoint, EngineResult, EngineStream
from lorafleet.server.engine.pool import EnginePool, Replica
from lorafleet.server.errors import (
    ContextLengthExceededError,
    EngineUnavailableError,
    EngineUnreachableError,
    LorafleetError,
    RateLimitError,
)
from lorafleet.server.keys import ADMIN, Principal
from lorafleet.server.limits import RateLimiter
from lorafleet.server.lora import AdapterManager
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.protocol import _SamplingFields
from lorafleet.server.request_relay import SettledStream, relay
from lorafleet.server.request_state import Account, InferenceRequest
from lorafleet.server.request_target import ModelResolver, Target
from lorafleet.server.token_limits import TokenLimits, apply_max_tokens
from lorafleet.server.tracing import EngineCall, Tracing
from lorafleet.server.usage import UsageMeter

__all__ = ["InferenceService", "ModelResolver", "RetryPolicy", "Target"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries before the first byte only: nothing has reached the client, so a retry can
    never duplicate output. Engine 4xx other than 429 are never retried."""

    attempts: int = 3
    max_wait_s: float = 2.0


class InferenceService:
    def __init__(
        self,
        resolver: ModelResolver,
        metrics: GatewayMetrics,
        retry: RetryPolicy | None = None,
        *,
        limiter: RateLimiter | None = None,
        meter: UsageMeter | None = None,
        max_in_flight: int | None = None,
        tracing: Tracing | None = None,
        token_limits: Mapping[str, TokenLimits] | None = None,
        inter_token_timeout_s: float | None = None,
    ) -> None:
        self.resolver = resolver
        self.tracing = tracing or Tracing()
        self.metrics = metrics
        self.retry = retry or RetryPolicy()
        self.limiter = limiter
        self.meter = meter
        self.max_in_flight = max_in_flight  # per base model: past it, 429 instead of a queue
        self.token_limits = token_limits or {}  # per base model; TokenLimits() when absent
        self.inter_token_timeout_s = inter_token_timeout_s  # between a stream's events

    @property
    def _adapters(self) -> AdapterManager | None:
        return self.resolver.adapters

    async def handle(
        self,
        endpoint: Endpoint,
        request: _SamplingFields,
        request_id: str,
        started: float,
        who: Principal = ADMIN,
    ) -> Response:
        log = request_context.current()
        if log is not None:
            log.model = request.model
            log.tenant = who.tenant
            log.key_id = who.key.key_id if who.key else None
        try:
            with self.tracing.span("resolve", model=request.model):
                target = await self.resolver.resolve(request.model, who)
        except LorafleetError as exc:
            self.metrics.requests.labels("unknown", str(exc.status)).inc()
            raise
        req = self._begin(endpoint, request, target, request_id, started, who, log)
        await self._admit(req)
        try:
            response = await (self._stream(req) if req.stream else self._complete(req))
        except BaseException:  # an error, or the client left: nothing was sent, refund it all
            req.account.close()
            raise
        if self.limiter is not None and who.key is not None:
            response.headers.update(self.limiter.headers(who.key))
        return response

    def _begin(
        self, endpoint: Endpoint, request: _SamplingFields, target: Target, request_id: str,
        started: float, who: Principal, log: request_context.RequestContext | None,
    ) -> InferenceRequest:  # fmt: skip
        """The request's one object; from here on the resolved adapter is pinned (the account
        releases it when it closes)."""
        if log is not None and target.log_adapter is not None:
            log.adapter = target.log_adapter
        body = request.declared_fields()
        body["model"] = target.engine_model
        account = Account(who, target.label, self.limiter, self.meter, release=self._pin(target))
        return InferenceRequest(
            endpoint=endpoint,
            body=body,
            target=target,
            label=self.metrics.model_label(target.label),
            account=account,
            request_id=request_id,
            started=started,
            stream=bool(request.stream),
            wants_usage=request.wants_usage_in_stream,
            limits=self.token_limits.get(target.pool.base_model, TokenLimits()),
            log=log,
        )

    async def _admit(self, req: InferenceRequest) -> None:
        """Limits before anything that costs engine work (the context check may tokenize). A
        refused request releases everything it held and is counted under its status."""
        try:
            with self.tracing.span("admission"):
                # The default max_tokens first: the reservation and the context check use it.
                defaulted = apply_max_tokens(req.body, req.limits.default, req.limits.cap)
                await self._reserve(req)
                if not defaulted:
                    # A default the client never asked for is shortened by vLLM, not refused.
                    await self._check_context(req)
        except BaseException as exc:
            req.account.close()
            if isinstance(exc, LorafleetError):
                self.metrics.requests.labels(req.label, str(exc.status)).inc()
                if exc.status == 429:
                    self.metrics.refused(req.who.tenant, exc.code)
            raise
        if req.stream:
            stream_options = req.body.get("stream_options", {})
            req.body["stream_options"] = {**stream_options, "include_usage": True}

    async def _reserve(self, req: InferenceRequest) -> None:
        """Admit the request (queue cap, then the key's limits) and reserve its worst case:
        the prompt (estimated at one token per 3 bytes) plus the completion cap for every
        choice the engine will generate (prompts x n)."""
        pool, body, account, who = req.target.pool, req.body, req.account, req.who
        if self.max_in_flight is not None and pool.in_flight >= self.max_in_flight:
            raise RateLimitError(
                f"{pool.base_model} is at capacity ({pool.in_flight} requests in flight)",
                retry_after_s=1,
                code="queue_full",
            )
        account.prompt_estimate = len(orjson.dumps(body.get("messages") or body.get("prompt"))) // 3
        if self.limiter is None or who.key is None:
            return
        choices = _choices(body)
        cap = _completion_cap(body)
        if cap is None:
            # vLLM's default: whatever the context leaves. A budget smaller than that still
            # serves the request, capped (for the engine too) at what the budget has left.
            cap = pool.max_model_len or 2048
            left = self.limiter.budget_left(who.key)
            if left is not None and account.prompt_estimate + cap * choices > left:
                allowed = (left - account.prompt_estimate) // choices
                if allowed >= 1:
                    cap = body["max_tokens"] = allowed
        account.reservation = await self.limiter.acquire(
            who.key, account.prompt_estimate + cap * choices
        )

    async def _check_context(self, req: InferenceRequest) -> None:
        """OpenAI answers 400 when prompt + max_tokens exceed the context window; vLLM quietly
        shortens max_tokens instead. Only requests that may be near the limit (estimating a
        generous one token per 2 bytes of prompt) pay for an exact count from the engine, on
        the replica the request will then be sent to."""
        body = req.body
        max_tokens = _completion_cap(body)
        limit = req.target.pool.max_model_len
        if not max_tokens or not limit:
            return
        prompt = body.get("messages") if req.endpoint is Endpoint.CHAT else body.get("prompt")
        if max_tokens + len(orjson.dumps(prompt)) // 2 <= limit:
            return
        replica = self._choose(req)
        try:
            counted = await replica.engine.count_tokens(req.endpoint, body)
        except LorafleetError as exc:
            if exc.status == 400:
                raise
            req.replica = None  # cannot count there: let the engine decide, maybe elsewhere
            return
        if counted + max_tokens > limit:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {counted + max_tokens} tokens ({counted} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the messages "
                "or completion.",
                param="messages",
            )

    async def _complete(self, req: InferenceRequest) -> Response:
        async def generate(replica: Replica) -> EngineResult:
            with req.target.pool.lease(replica), self._track(req.target, replica):
                return await replica.engine.generate(req.endpoint, req.body, req.request_id)

        status = "200"
        gauge = self.metrics.in_flight.labels(req.label)
        gauge.inc()
        try:
            _, result, call = await self._attempt(req, generate)
        except LorafleetError as exc:
            status = str(exc.status)
            raise
        finally:
            gauge.dec()
            self.metrics.requests.labels(req.label, status).inc()
        call.end()
        req.record_usage(result.body.get("usage"), self.metrics)
        req.account.close_early()  # no usage in the answer: nothing to bill it on
        self.metrics.e2e_latency.labels(req.label).observe(time.perf_counter() - req.started)
        return Response(req.target.renamer()(result.raw), media_type="application/json")

    async def _stream(self, req: InferenceRequest) -> Response:
        async def open_stream(replica: Replica) -> EngineStream:
            return await replica.engine.open_stream(req.endpoint, req.body, req.request_id)

        # Everything that can fail before the first byte fails here, as a plain HTTP error.
        try:
            replica, stream, call = await self._attempt(req, open_stream)
        except LorafleetError as exc:
            self.metrics.requests.labels(req.label, str(exc.status)).inc()
            raise
        events = relay(
            req, stream, replica, call, self.metrics, self._track(req.target, replica),
            self.inter_token_timeout_s,
        )  # fmt: skip
        return SettledStream(events, stream, req.account)

    async def _attempt(
        self, req: InferenceRequest, call: Callable[[Replica], Awaitable[T]]
    ) -> tuple[Replica, T, EngineCall]:
        """Place the request and run `call` on the replica; when the engine is unreachable,
        busy (503) or rate-limited (429), try again, on another replica if there is one, after
        a jittered back-off that honours Retry-After. Also returns the attempt's open trace
        span, which the caller ends at the answer's last byte."""
        pool = req.target.pool

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            jitter = random.uniform(0, 0.05 * 2**state.attempt_number)
            others = [r for r in pool.replicas if r.healthy and r.url not in req.tried]
            hinted = 0.0 if others else float(getattr(error, "retry_after_s", 0.0))
            return min(self.retry.max_wait_s, max(hinted, jitter))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=wait,
            retry=retry_if_exception_type((EngineUnavailableError, RateLimitError)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                if req.log is not None:
                    req.log.retries = number - 1
                replica = await self._place(req)
                req.tried.add(replica.url)
                engine_call = self.tracing.engine_call(replica.url, number, req.log)
                try:
                    result = await _guard(pool, replica, call(replica))
                except BaseException as exc:
                    engine_call.fail(exc)
                    raise
                return replica, result, engine_call
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _choose(self, req: InferenceRequest) -> Replica:
        """The request's replica: the one already chosen while it is still fit (healthy, not
        tried), else a new pick (not one that failed, if others are healthy; one that holds the
        adapter if it is not overloaded)."""
        chosen = req.replica
        if chosen is not None and chosen.healthy and chosen.url not in req.tried:
            return chosen
        adapters, version = self._adapters, req.target.adapter
        prefer = None
        if version is not None and adapters is not None:
            prefer = partial(adapters.holds, version=version)
        return req.choose(req.target.pool.pick(prefer=prefer, avoid=req.tried))

    async def _place(self, req: InferenceRequest) -> Replica:
        """Choose the replica and make sure the adapter is loaded there."""
        replica = self._choose(req)
        adapters, version = self._adapters, req.target.adapter
        if version is None or adapters is None:
            return replica
        warm = adapters.holds(replica, version)
        if req.log is not None:
            req.log.affinity = "warm" if warm else "cold"
        if req.target.counts_affinity:
            self.metrics.routing.labels("warm" if warm else "cold").inc()
        loading = (
            nullcontext()
            if warm
            else self.tracing.span("adapter.load", adapter=version.engine_name, replica=replica.url)
        )
        with loading:
            await _guard(req.target.pool, replica, adapters.ensure_loaded(version, replica))
        return replica

    def _pin(self, target: Target) -> Callable[[], None]:
        if target.adapter is None or self._adapters is None:
            return _nothing
        return self._adapters.pin(target.adapter)

    def _track(self, target: Target, replica: Replica) -> AbstractContextManager[None]:
        if target.adapter is None or self._adapters is None:
            return nullcontext()
        return self._adapters.track(target.adapter, replica)


async def _guard(pool: EnginePool, replica: Replica, call: Awaitable[T]) -> T:
    """Await an engine call; a replica that cannot be reached stops getting traffic until its
    health check passes again."""
    try:
        return await call
    except EngineUnreachableError:
        pool.mark_failed(replica)
        raise


def _completion_cap(body: dict[str, Any]) -> int | None:
    """The most tokens per choice the engine may generate (vLLM prefers
    `max_completion_tokens` over `max_tokens` when both are set)."""
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(cap) if cap else None


def _choices(body: dict[str, Any]) -> int:
    """Completions the engine generates: n for each prompt of a list of prompts."""
    prompt = body.get("prompt")
    listed = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], str | list)
    prompts = len(prompt) if listed and isinstance(prompt, list) else 1
    return prompts * int(body.get("n") or 1)


def _nothing() -> None:
    return None
