"""Inference: resolve the requested model, pick a replica, relay the engine's answer.

The request body is validated by the protocol models, rebuilt from declared fields only, and
sent with `model` set to the name the engine knows. Answers pass through as bytes: non-streamed
JSON untouched, streamed SSE events one by one as they arrive (no buffering or coalescing). The
gateway always asks the engine for usage so it can meter; a client that did not ask for
`stream_options.include_usage` never sees the usage chunk.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from lorafleet.adapters.registry import AdapterVersion
from lorafleet.server import context as request_context
from lorafleet.server.engine.base import Endpoint, EngineResult, EngineStream
from lorafleet.server.engine.pool import EnginePool, Replica
from lorafleet.server.errors import (
    ContextLengthExceededError,
    EngineTimeoutError,
    EngineUnavailableError,
    EngineUnreachableError,
    LorafleetError,
    ModelNotFoundError,
    RateLimitError,
)
from lorafleet.server.keys import ADMIN, Principal
from lorafleet.server.limits import RateLimiter, Reservation
from lorafleet.server.lora import AdapterManager
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.protocol import ModelCard, _SamplingFields
from lorafleet.server.token_limits import TokenLimits, apply_max_tokens
from lorafleet.server.tracing import EngineCall, Tracing
from lorafleet.server.usage import UsageMeter

log = logging.getLogger(__name__)

_DONE = b"data: [DONE]\n\n"
T = TypeVar("T")
_USAGE = b'"usage"'


@dataclass(frozen=True)
class Target:
    """Where a request goes: `label` names it in metrics, `engine_model` is the engine's name
    for it, `adapter` the pinned adapter version (None for a base model)."""

    label: str
    engine_model: str
    pool: EnginePool
    adapter: AdapterVersion | None = None
    rename: str | None = None  # report this as `model` instead of the engine's name

    def renamer(self) -> Callable[[bytes], bytes]:
        """Rewrites `"model":"<engine name>"` in the engine's JSON (no parse: a bytes replace)."""
        if self.rename is None:
            return _same
        old = b'"model":"' + self.engine_model.encode() + b'"'
        new = b'"model":"' + self.rename.encode() + b'"'
        return lambda data: data.replace(old, new, 1)


class ModelResolver:
    """Maps the `model` a client sends to a target: a base model id, an adapter name (its
    alias) or `name@version`. Names are looked up, never used as paths."""

    def __init__(
        self, pools: dict[str, EnginePool], adapters: AdapterManager | None, created: int
    ) -> None:
        self._pools = pools
        self.adapters = adapters
        self._created = created

    async def resolve(self, model: str, who: Principal = ADMIN) -> Target:
        pool = self._pools.get(model)
        if pool is not None:
            guard = self.adapters.guard_for(model) if self.adapters else None
            if guard is not None:  # see lorafleet.adapters.guard: vLLM CPU mixes batches wrong
                return Target(model, guard.engine_name, pool, guard, rename=model)
            return Target(label=model, engine_model=model, pool=pool)
        version = self.adapters.lookup(model) if self.adapters else None
        if version is None or version.base_model not in self._pools:
            raise ModelNotFoundError(model)
        if not who.may_use(version.name):  # another tenant's adapter looks like no adapter
            raise ModelNotFoundError(model)
        return Target(version.name, version.engine_name, self._pools[version.base_model], version)

    async def list_models(self, who: Principal = ADMIN) -> list[ModelCard]:
        cards = [
            ModelCard(id=name, created=self._created, root=name, max_model_len=pool.max_model_len)
            for name, pool in sorted(self._pools.items())
        ]
        for version in self.adapters.servable() if self.adapters else []:
            if not who.may_use(version.name):
                continue
            cards.append(
                ModelCard(
                    id=version.name,
                    created=int(version.created_at),
                    root=version.engine_name,
                    parent=version.base_model,
                )
            )
        return cards


@dataclass(frozen=True)
class RetryPolicy:
    """Retries before the first byte only: nothing has reached the client, so a retry can
    never duplicate output. Engine 4xx other than 429 are never retried."""

    attempts: int = 3
    max_wait_s: float = 2.0


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

    async def _check_context(
        self, endpoint: Endpoint, body: dict[str, Any], target: Target
    ) -> None:
        """OpenAI answers 400 when prompt + max_tokens exceed the context window; vLLM quietly
        shortens max_tokens instead. Only requests that may be near the limit (estimating a
        generous one token per 2 bytes of prompt) pay for an exact count from the engine."""
        max_tokens = _completion_cap(body)
        limit = target.pool.max_model_len
        if not max_tokens or not limit:
            return
        prompt = body.get("messages") if endpoint is Endpoint.CHAT else body.get("prompt")
        if max_tokens + len(orjson.dumps(prompt)) // 2 <= limit:
            return
        replica = target.pool.pick()
        try:
            counted = await replica.engine.count_tokens(endpoint, body)
        except LorafleetError as exc:
            if exc.status == 400:
                raise
            return  # cannot count: let the engine decide
        if counted + max_tokens > limit:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {counted + max_tokens} tokens ({counted} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the messages "
                "or completion.",
                param="messages",
            )

    async def _open_account(self, who: Principal, body: dict[str, Any], target: Target) -> Account:
        """Admit the request (queue cap, then the key's limits) and reserve its worst case:
        the prompt (estimated at one token per 3 bytes) plus the completion cap for every
        choice the engine will generate (prompts x n)."""
        pool = target.pool
        if self.max_in_flight is not None and pool.in_flight >= self.max_in_flight:
            raise RateLimitError(
                f"{pool.base_model} is at capacity ({pool.in_flight} requests in flight)",
                retry_after_s=1,
                code="queue_full",
            )
        account = Account(who, target.label, self.limiter, self.meter)
        account.prompt_estimate = len(orjson.dumps(body.get("messages") or body.get("prompt"))) // 3
        if self.limiter is None or who.key is None:
            return account
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
        return account

    async def handle(
        self,
        endpoint: Endpoint,
        request: _SamplingFields,
        request_id: str,
        started: float,
        who: Principal = ADMIN,
    ) -> Response:
        context = request_context.current()
        if context is not None:
            context.model = request.model
            context.tenant = who.tenant
            context.key_id = who.key.key_id if who.key else None
        try:
            with self.tracing.span("resolve", model=request.model):
                target = await self.resolver.resolve(request.model, who)
        except LorafleetError as exc:
            self.metrics.requests.labels("unknown", str(exc.status)).inc()
            raise
        if context is not None and target.adapter is not None and target.rename is None:
            context.adapter = target.adapter.engine_name
        body = request.declared_fields()
        body["model"] = target.engine_model
        release = self._pin(target)
        account: Account | None = None
        # Limits before anything that costs engine work (the context check may tokenize).
        try:
            limits = self.token_limits.get(target.pool.base_model, TokenLimits())
            with self.tracing.span("admission"):
                # The default max_tokens first: the reservation and the context check use it.
                defaulted = apply_max_tokens(body, limits.default, limits.cap)
                account = await self._open_account(who, body, target)
                account.release = release
                if not defaulted:
                    # A default the client never asked for is shortened by vLLM, not refused.
                    await self._check_context(endpoint, body, target)
        except BaseException as exc:
            if account is None:
                release()
            else:
                account.close()
            if isinstance(exc, LorafleetError):
                self.metrics.requests.labels(
                    self.metrics.model_label(target.label), str(exc.status)
                ).inc()
                if exc.status == 429:
                    self.metrics.refused(who.tenant, exc.code)
            raise
        try:
            if request.stream:
                body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
                response = await self._stream(
                    endpoint, body, target, request, request_id, started, account
                )
            else:
                response = await self._complete(
                    endpoint, body, target, request_id, started, account
                )
        except BaseException:  # an error, or the client left: nothing was sent, refund it all
            account.close()
            raise
        if self.limiter is not None and who.key is not None:
            response.headers.update(self.limiter.headers(who.key))
        return response

    async def _complete(
        self, endpoint: Endpoint, body: dict[str, Any], target: Target, request_id: str,
        started: float, account: Account,
    ) -> Response:  # fmt: skip
        async def generate(replica: Replica) -> EngineResult:
            with target.pool.lease(replica), self._track(target, replica):
                return await replica.engine.generate(endpoint, body, request_id)

        status = "200"
        label = self.metrics.model_label(target.label)
        gauge = self.metrics.in_flight.labels(label)
        gauge.inc()
        try:
            _, result, call = await self._attempt(target, generate)
        except LorafleetError as exc:
            status = str(exc.status)
            raise
        finally:
            gauge.dec()
            self.metrics.requests.labels(label, status).inc()
        call.end()
        self._record_usage(label, result.body.get("usage"), account)
        account.close_early()  # no usage in the answer: nothing to bill it on
        self.metrics.e2e_latency.labels(label).observe(time.perf_counter() - started)
        return Response(target.renamer()(result.raw), media_type="application/json")

    async def _stream(
        self, endpoint: Endpoint, body: dict[str, Any], target: Target,
        request: _SamplingFields, request_id: str, started: float, account: Account,
    ) -> Response:  # fmt: skip
        async def open_stream(replica: Replica) -> EngineStream:
            return await replica.engine.open_stream(endpoint, body, request_id)

        # Everything that can fail before the first byte fails here, as a plain HTTP error.
        try:
            replica, stream, call = await self._attempt(target, open_stream)
        except LorafleetError as exc:
            self.metrics.requests.labels(
                self.metrics.model_label(target.label), str(exc.status)
            ).inc()
            raise
        relay = self._relay(
            stream, target, replica, request.wants_usage_in_stream, started, account, call
        )
        return _SettledStream(relay, stream, account)

    async def _attempt(
        self, target: Target, call: Callable[[Replica], Awaitable[T]]
    ) -> tuple[Replica, T, EngineCall]:
        """Place the request and run `call` on the replica; when the engine is unreachable,
        busy (503) or rate-limited (429), try again, on another replica if there is one, after
        a jittered back-off that honours Retry-After. Also returns the attempt's open trace
        span, which the caller ends at the answer's last byte."""
        tried: set[str] = set()
        context = request_context.current()

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            jitter = random.uniform(0, 0.05 * 2**state.attempt_number)
            others = [r for r in target.pool.replicas if r.healthy and r.url not in tried]
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
                if context is not None:
                    context.retries = number - 1
                replica = await self._place(target, avoid=tried)
                tried.add(replica.url)
                engine_call = self.tracing.engine_call(replica.url, number, context)
                try:
                    result = await self._guard(target.pool, replica, call(replica))
                except BaseException as exc:
                    engine_call.fail(exc)
                    raise
                return replica, result, engine_call
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _place(self, target: Target, avoid: set[str]) -> Replica:
        """Pick a replica (not one that just failed, if others are healthy; one that holds the
        adapter if it is not overloaded) and make sure the adapter is loaded there."""
        adapters, version = self.resolver.adapters, target.adapter
        context = request_context.current()
        if version is None or adapters is None:
            replica = target.pool.pick(avoid=avoid)
            if context is not None:
                context.replica = replica.url
            return replica
        replica = target.pool.pick(prefer=lambda r: adapters.holds(r, version), avoid=avoid)
        warm = adapters.holds(replica, version)
        if context is not None:
            context.replica = replica.url
            context.affinity = "warm" if warm else "cold"
        if not adapters.is_guard(version):
            self.metrics.routing.labels("warm" if warm else "cold").inc()
        loading = (
            nullcontext()
            if warm
            else self.tracing.span("adapter.load", adapter=version.engine_name, replica=replica.url)
        )
        with loading:
            await self._guard(target.pool, replica, adapters.ensure_loaded(version, replica))
        return replica

    def _pin(self, target: Target) -> Callable[[], None]:
        if target.adapter is None or self.resolver.adapters is None:
            return _nothing
        return self.resolver.adapters.pin(target.adapter)

    def _track(self, target: Target, replica: Replica) -> AbstractContextManager[None]:
        if target.adapter is None or self.resolver.adapters is None:
            return nullcontext()
        return self.resolver.adapters.track(target.adapter, replica)

    async def _relay(
        self, stream: EngineStream, target: Target, replica: Replica, wants_usage: bool,
        started: float, account: Account, call: EngineCall,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        label = self.metrics.model_label(target.label)
        context = request_context.current()
        rename = target.renamer()
        status = "200"
        first = True
        gauge = self.metrics.in_flight.labels(label)
        gauge.inc()
        try:
            with target.pool.lease(replica), self._track(target, replica):
                events = aiter(stream)
                gap: float | None = None  # before the first event the client's read timeout
                while True:
                    try:
                        # Only the wait for the engine is timed, never a slow client's.
                        async with asyncio.timeout(gap):
                            event = await anext(events)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise EngineTimeoutError(
                            f"the engine sent nothing for {gap:g}s in the middle of the stream"
                        ) from None
                    gap = self.inter_token_timeout_s
                    if first:
                        ttft = time.perf_counter() - started
                        self.metrics.ttft.labels(label).observe(ttft)
                        call.first_byte()
                        if context is not None:
                            context.ttft_s = ttft
                        first = False
                    if _USAGE in event:  # cheap byte test first: only usage chunks are parsed
                        chunk = _parse_event(event)
                        if chunk.get("usage") and not chunk.get("choices"):
                            self._record_usage(label, chunk["usage"], account)
                            if not wants_usage:
                                continue
                    elif event != _DONE:
                        account.sent += 1
                    yield rename(event)
        except LorafleetError as exc:
            # The status line is gone: the error travels as the stream's last event.
            status = str(exc.status)
            log.warning("stream from %s broke: %s", replica.url, exc.message)
            yield exc.sse_event()
            yield _DONE
        finally:
            await stream.aclose()
            call.end(int(status))
            account.close_early()  # no-op when usage arrived
            gauge.dec()
            self.metrics.requests.labels(label, status).inc()
            self.metrics.e2e_latency.labels(label).observe(time.perf_counter() - started)

    @staticmethod
    async def _guard(pool: EnginePool, replica: Replica, call: Awaitable[T]) -> T:
        """Await an engine call; a replica that cannot be reached stops getting traffic until
        its health check passes again."""
        try:
            return await call
        except EngineUnreachableError:
            pool.mark_failed(replica)
            raise

    def _record_usage(self, label: str, usage: Any, account: Account) -> None:
        if isinstance(usage, dict):
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            self.metrics.record_usage(label, prompt, completion, account.who.tenant)
            context = request_context.current()
            if context is not None:
                context.prompt_tokens, context.completion_tokens = prompt, completion
            account.close(prompt, completion)


class _SettledStream(StreamingResponse):
    """A stream whose client left before the first event never runs the relay (whose
    `finally` settles the account and closes the engine stream): that is done here then."""

    def __init__(self, relay: AsyncIterator[bytes], stream: EngineStream, account: Account):
        super().__init__(relay, media_type="text/event-stream")
        self._stream = stream
        self._account = account

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._account.closed:
                self._account.close_early()
                await self._stream.aclose()


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


def _same(data: bytes) -> bytes:
    return data


def _parse_event(event: bytes) -> dict[str, Any]:
    payload = event.removeprefix(b"data: ").strip()
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
