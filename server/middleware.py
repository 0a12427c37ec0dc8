"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming).

- `RequestIdMiddleware`: every response carries `x-request-id` (the client's, if it sent a sane
  one, else a new one), also stored in `scope["state"]["request_id"]` for the handlers. It opens
  the request's `RequestContext` (log fields, see server/context.py), its trace span, and
  writes the access line when the response is done.
- `HeaderLimitMiddleware`: too many or too large headers get 431.
- `BodyLimitMiddleware`: bodies past `max_bytes` get 413 before they are read into memory,
  whether the client declared a Content-Length or streamed a chunked body.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lorafleet.server import context as request_context
from lorafleet.server.context import RequestContext
from lorafleet.server.errors import HeadersTooLargeError, PayloadTooLargeError, error_response
from lorafleet.server.logs import QUIET_ROUTES, access_line
from lorafleet.server.tracing import Tracing, valid_traceparent

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(
        self, app: ASGIApp, *, tracing: Tracing | None = None, access_log: bool = False
    ) -> None:
        self.app = app
        self.tracing = tracing or Tracing()
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = new_request_id()
        trace_headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _SANE_ID.match(value):
                request_id = value.decode()
            elif name in (b"traceparent", b"tracestate"):
                trace_headers[name.decode()] = value.decode("latin-1")
        scope.setdefault("state", {})["request_id"] = request_id
        context = RequestContext(
            request_id,
            method=scope["method"],
            path=scope["path"],
            traceparent=valid_traceparent(trace_headers.get("traceparent")),
            tracestate=trace_headers.get("tracestate"),
        )
        token = request_context.begin(context)
        span = (
            None
            if context.path in QUIET_ROUTES
            else self.tracing.start_request(trace_headers, context.method, context.path)
        )
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
                context.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if context.status is None:  # the outermost error middleware answers 500
                context.status = 500
            raise
        finally:
            route = scope.get("route")
            context.route = getattr(route, "path", None)
            if span is not None:
                span.end(context)
            if self.access_log:
                access_line(context, time.perf_counter() - started)
            request_context.end(token)


class HeaderLimitMiddleware:
    """431 for requests whose headers are too many or too large (uvicorn's httptools parser
    accepts megabytes of headers; nothing downstream should carry them)."""

    def __init__(self, app: ASGIApp, max_bytes: int = 64 * 1024, max_count: int = 256) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) for name, value in headers)
            if len(headers) > self.max_count or size > self.max_bytes:
                response = error_response(
                    HeadersTooLargeError("Request headers are too large or too many.")
                )
                response.headers["connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                # The server delivers at most Content-Length bytes: pass through untouched.
                await self.app(scope, receive, send)
                return
        # No Content-Length (chunked): read up to the limit, then replay the body to the app.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"Request body is larger than the limit of {self.max_bytes} bytes."

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(PayloadTooLargeError(self._message()))
        response.headers["connection"] = "close"
        await response(scope, receive, send)
