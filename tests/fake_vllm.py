"""A fake vLLM OpenAI server as an `httpx.MockTransport`: the cheapest seam for gateway tests.

It speaks the parts of vLLM's HTTP API the gateway uses (health, models, chat and text
completions, streamed or not, LoRA load/unload) with vLLM's own error shapes, records every
request, and can be told to misbehave (refuse, answer an error, stall, break mid-stream).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

MODEL = "smollm2-135m-instruct"
MAX_MODEL_LEN = 2048


@dataclass
class FakeVLLM:
    base: str = MODEL  # the base model it serves (vLLM --served-model-name)
    models: set[str] = field(default_factory=set)
    healthy: bool = True
    tokens: list[str] = field(default_factory=lambda: ["The", " capital", " is", " Paris", "."])
    refuse_connections: bool = False
    fail_status: int | None = None  # answer every inference request with this status
    stall_s: float = 0.0  # wait before answering
    break_after: int | None = None  # streamed events before the connection breaks
    load_delay_s: float = 0.0
    event_gap_s: float = 0.0  # between streamed events
    line_end: bytes = b"\n"  # of streamed events' lines (SSE also allows CRLF and CR)
    piece_bytes: int | None = None  # send the stream in pieces this long, cut anywhere
    prompt_tokens: int = 7  # what usage reports for every prompt
    tokenized: int = 0  # /tokenize calls
    fail_loads: bool = False
    loads: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[httpx.Headers] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.models = self.models or {self.base}

    def restart(self) -> None:
        """The engine process restarted: it forgot every adapter."""
        self.models = {self.base}

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.refuse_connections:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/health":
            return httpx.Response(200 if self.healthy else 503)
        if path == "/v1/models":
            data = [
                {"id": m, "object": "model", "max_model_len": MAX_MODEL_LEN,
                 "parent": None if m == self.base else self.base}
                for m in sorted(self.models)
            ]  # fmt: skip
            return httpx.Response(200, json={"object": "list", "data": data})
        if path == "/v1/load_lora_adapter":
            payload = json.loads(request.content)
            self.loads.append(payload)
            await asyncio.sleep(self.load_delay_s)
            if self.fail_loads:
                return _error(400, "cannot load adapter", None)
            self.models.add(payload["lora_name"])
            return httpx.Response(200, text="ok")
        if path == "/tokenize":
            self.tokenized += 1
            payload = json.loads(request.content)
            text = json.dumps(payload.get("messages") or payload.get("prompt"))
            return httpx.Response(200, json={"count": len(text.split()), "max_model_len": 2048})
        if path == "/v1/unload_lora_adapter":
            self.models.discard(json.loads(request.content)["lora_name"])
            return httpx.Response(200, text="ok")
        if path in ("/v1/chat/completions", "/v1/completions"):
            return await self._inference(request, chat=path.endswith("chat/completions"))
        return httpx.Response(404, json={"detail": "Not Found"})

    async def _inference(self, request: httpx.Request, chat: bool) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(request.headers)
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        if self.fail_status is not None:
            return _error(self.fail_status, "engine says no", None)
        if body["model"] not in self.models:
            return _error(404, f"The model `{body['model']}` does not exist.", "model")
        max_tokens = body.get("max_tokens") or 16
        if max_tokens > MAX_MODEL_LEN:
            return _error(
                400,
                f"max_tokens={max_tokens} cannot be greater than max_model_len=2048.",
                "max_tokens",
            )
        tokens = self.tokens[:max_tokens]
        finish = "length" if max_tokens < len(self.tokens) else "stop"
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": self.prompt_tokens + len(tokens),
        }
        if body.get("stream"):
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=self._events(body, tokens, finish, usage, chat),
            )
        text = "".join(tokens)
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return httpx.Response(
            200,
            json={
                "id": "cmpl-fake",
                "object": "chat.completion" if chat else "text_completion",
                "created": 1,
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            },
        )

    async def _events(
        self,
        body: dict[str, Any],
        tokens: list[str],
        finish: str,
        usage: dict[str, int],
        chat: bool,
    ) -> AsyncIterator[bytes]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

        events = []
        if chat:
            events.append(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))
        for i, token in enumerate(tokens):
            last = i == len(tokens) - 1
            delta = {"delta": {"content": token}} if chat else {"text": token}
            events.append(chunk([{"index": 0, **delta, "finish_reason": finish if last else None}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk([], usage=usage))
        events.append(b"data: [DONE]\n\n")
        if self.line_end != b"\n" or self.piece_bytes:
            body = b"".join(events).replace(b"\n", self.line_end)
            size = self.piece_bytes or len(body)
            events = [body[i : i + size] for i in range(0, len(body), size)]
        for i, event in enumerate(events):
            if self.break_after is not None and i >= self.break_after:
                raise httpx.ReadError("engine died")
            await asyncio.sleep(self.event_gap_s)
            yield event


def _error(status: int, message: str, param: str | None) -> httpx.Response:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return httpx.Response(
        status, json={"error": {"message": message, "type": kind, "param": param, "code": status}}
    )


def fleet_transport(engines: dict[str, FakeVLLM]) -> httpx.MockTransport:
    """One transport for several fake engines, told apart by host (`http://<host>:8000`)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        return await engines[request.url.host].handle(request)

    return httpx.MockTransport(handle)


def asgi_app(engine: FakeVLLM) -> Any:
    """`engine` as an ASGI app, to serve on a real socket (`tests.fault_engine.serve_in_thread`)
    for the aiohttp engine client, which cannot use an httpx transport."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = httpx.Request(
            scope["method"],
            f"http://engine{scope['path']}",
            headers=[(k.decode(), v.decode()) for k, v in scope["headers"]],
            content=body,
        )
        response = await engine.handle(request)
        headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers})  # fmt: skip
        assert isinstance(response.stream, httpx.AsyncByteStream)
        async for chunk in response.stream:  # a stream breaks off where the engine says
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app
