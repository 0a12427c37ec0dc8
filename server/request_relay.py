"""A streamed answer: engine events relayed one by one to the client, metered as they pass.

Events pass through as the engine wrote them (only a guard's engine name is renamed back); the
usage chunk the gateway always asks for is read for metering and dropped unless the client asked
for it. Once the status line is out, an error travels as the stream's last event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from lorafleet.server.engine.base import EngineStream
from lorafleet.server.engine.pool import Replica
from lorafleet.server.errors import EngineTimeoutError, LorafleetError
from lorafleet.server.metrics import GatewayMetrics
from lorafleet.server.request_state import Account, InferenceRequest
from lorafleet.server.tracing import EngineCall
from lorafleet.sse import event_data

DONE = b"data: [DONE]\n\n"
_USAGE = b'"usage"'

log = logging.getLogger(__name__)


async def relay(
    request: InferenceRequest, stream: EngineStream, replica: Replica, call: EngineCall,
    metrics: GatewayMetrics, tracked: AbstractContextManager[None],
    inter_token_timeout_s: float | None,
) -> AsyncIterator[bytes]:  # fmt: skip
    """The client's body: `stream`'s events while `replica` is leased and `tracked` (the adapter
    in use) is held; the books (metrics, trace span, account) are closed at the end, however
    it ends."""
    label, account = request.label, request.account
    rename = request.target.renamer()
    status = "200"
    first = True
    gauge = metrics.in_flight.labels(label)
    gauge.inc()
    try:
        with request.target.pool.lease(replica), tracked:
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
                gap = inter_token_timeout_s
                if first:
                    ttft = time.perf_counter() - request.started
                    metrics.ttft.labels(label).observe(ttft)
                    call.first_byte()
                    if request.log is not None:
                        request.log.ttft_s = ttft
                    first = False
                if _USAGE in event:  # cheap byte test first: only usage chunks are parsed
                    chunk = _parse_event(event)
                    if chunk.get("usage") and not chunk.get("choices"):
                        request.record_usage(chunk["usage"], metrics)
                        if not request.wants_usage:
                            continue
                elif event != DONE:
                    account.sent += 1
                yield rename(event)
    except LorafleetError as exc:
        # The status line is gone: the error travels as the stream's last event.
        status = str(exc.status)
        log.warning("stream from %s broke: %s", replica.url, exc.message)
        yield exc.sse_event()
        yield DONE
    finally:
        await stream.aclose()
        call.end(int(status))
        account.close_early()  # no-op when usage arrived
        gauge.dec()
        metrics.requests.labels(label, status).inc()
        metrics.e2e_latency.labels(label).observe(time.perf_counter() - request.started)


class SettledStream(StreamingResponse):
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


def _parse_event(event: bytes) -> dict[str, object]:
    data = event_data(event)
    try:
        parsed = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
