"""A real HTTP fake of a vLLM engine, served by uvicorn in a thread, that fails on demand.

Unlike the MockTransport fake this one goes through real sockets, so timeouts, refused
connections, dropped connections and client disconnects behave as they do in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "smollm2-135m-instruct"


@dataclass
class Faults:
    status: int | None = None  # answer inference with this status (once per `status_times`)
    status_times: int = 1_000_000
    retry_after: str | None = None
    stall_first_byte_s: float = 0.0
    stall_after_events: int | None = None  # stream this many events, then hang
    die_after_events: int | None = None  # stream this many events, then drop the connection
    token_gap_s: float = 0.0
    tokens: int = 8
    requests: int = 0
    active_streams: int = 0
    aborted_streams: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)


def make_app(faults: Faults) -> Starlette:
    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def models(request: Request) -> Response:
        data = [{"id": MODEL, "object": "model", "max_model_len": 2048, "parent": None}]
        return JSONResponse({"object": "list", "data": data})

    async def generate(request: Request) -> Response:
        body = orjson.loads(await request.body())
        faults.requests += 1
        faults.seen.append(body)
        if faults.status is not None and faults.status_times > 0:
            faults.status_times -= 1
            headers = {"retry-after": faults.retry_after} if faults.retry_after else None
            error = {"error": {"message": "injected", "type": "x", "param": None, "code": 1}}
            return JSONResponse(error, status_code=faults.status, headers=headers)
        await asyncio.sleep(faults.stall_first_byte_s)
        if body.get("stream"):
            return StreamingResponse(events(body), media_type="text/event-stream")
        usage = {"prompt_tokens": 3, "completion_tokens": faults.tokens, "total_tokens": 11}
        message = {"role": "assistant", "content": "x" * faults.tokens}
        choice = {"index": 0, "message": message, "finish_reason": "length"}
        answer = {"id": "c", "object": "chat.completion", "created": 1, "model": body["model"]}
        return JSONResponse({**answer, "choices": [choice], "usage": usage})

    async def events(body: dict[str, object]) -> AsyncIterator[bytes]:
        faults.active_streams += 1
        finished = False
        try:
            for i in range(faults.tokens):
                if faults.die_after_events is not None and i >= faults.die_after_events:
                    raise ConnectionAbortedError("engine died")  # uvicorn drops the connection
                if faults.stall_after_events is not None and i >= faults.stall_after_events:
                    await asyncio.sleep(3600)
                delta = {"index": 0, "delta": {"content": "x"}, "finish_reason": None}
                chunk = {"id": "c", "object": "chat.completion.chunk", "model": body["model"]}
                chunk["choices"] = [delta]
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                await asyncio.sleep(faults.token_gap_s)
            usage = {"prompt_tokens": 3, "completion_tokens": faults.tokens, "total_tokens": 11}
            yield b"data: " + orjson.dumps({"id": "c", "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            faults.active_streams -= 1
            if not finished:
                faults.aborted_streams += 1

    routes = [
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/chat/completions", generate, methods=["POST"]),
        Route("/v1/completions", generate, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_in_thread(app: object, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app on a loopback port until the block ends; yields its URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
