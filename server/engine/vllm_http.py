"""`EngineClient` for a vLLM OpenAI server over HTTP: the only module that knows vLLM's URLs.

The HTTP itself goes through `HttpClient` (http.py): aiohttp when serving (and in the unit tests,
over a real socket), httpx with a `MockTransport` in the unit tests too. Streams are split into
events by the one SSE splitter (lorafleet/sse.py) the load generator also uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from lorafleet.server import context as request_context
from lorafleet.server.engine.base import Endpoint, EngineClient, EngineResult, EngineStream
from lorafleet.server.engine.http import HttpClient, HttpResponse, HttpStream
from lorafleet.server.errors import (
    AdapterNotSupportedError,
    ContextLengthExceededError,
    EngineError,
    LorafleetError,
    ModelNotFoundError,
    error_for_status,
)
from lorafleet.sse import SSESplitter

# vLLM reports "prompt (+ max_tokens) past max_model_len" as a 400 naming one of these params.
_CONTEXT_PARAMS = frozenset({"input_tokens", "input_text"})


class VLLMHttpEngine(EngineClient):
    def __init__(self, url: str, client: HttpClient, *, lora: bool = True) -> None:
        self.url = url.rstrip("/")
        self._client = client
        self.lora = lora  # False: the engine runs without LoRA, adapters are refused

    def __repr__(self) -> str:
        return f"VLLMHttpEngine({self.url!r})"

    async def generate(
        self, endpoint: Endpoint, body: dict[str, Any], request_id: str
    ) -> EngineResult:
        response = await self._client.request(
            "POST", self.url + endpoint.value, content=orjson.dumps(body),
            headers=_headers(request_id),
        )  # fmt: skip
        if response.status != 200:
            raise _engine_error(response.status, response.headers, response.content, body)
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise EngineError("engine returned a body that is not JSON") from exc
        return EngineResult(raw=response.content, body=parsed)

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], request_id: str
    ) -> EngineStream:
        response = await self._client.stream(
            self.url + endpoint.value, content=orjson.dumps(body), headers=_headers(request_id)
        )
        if response.status != 200:
            try:
                content = await response.read()
            finally:
                await response.aclose()
            raise _engine_error(response.status, response.headers, content, body)
        return _SSEStream(response)

    async def count_tokens(self, endpoint: Endpoint, body: dict[str, Any]) -> int:
        if endpoint is Endpoint.CHAT:
            payload = {"model": body["model"], "messages": body["messages"],
                       "add_generation_prompt": True}  # fmt: skip
            if body.get("tools"):
                payload["tools"] = body["tools"]
        else:
            payload = {"model": body["model"], "prompt": body["prompt"]}
        response = await self._post_json("/tokenize", payload)
        if response.status != 200:
            raise _engine_error(response.status, response.headers, response.content, body)
        return int(orjson.loads(response.content)["count"])

    async def list_models(self) -> list[dict[str, Any]]:
        response = await self._client.request("GET", self.url + "/v1/models")
        if response.status != 200:
            raise _engine_error(response.status, response.headers, response.content, {})
        data: list[dict[str, Any]] = orjson.loads(response.content).get("data", [])
        return data

    async def load_adapter(self, name: str, path: str) -> None:
        if not self.lora:
            raise AdapterNotSupportedError(
                f"adapter {name!r} cannot be served: this base model's engines run without "
                "LoRA (a quantised checkpoint on vLLM's CPU build, or engine_enable_lora off); "
                "serve adapters on a full-precision base model",
                param="model",
            )
        payload = {"lora_name": name, "lora_path": path, "load_inplace": False}
        response = await self._post_json("/v1/load_lora_adapter", payload)
        # vLLM answers 400 "already loaded" for a repeated load: loading is idempotent for us.
        if response.status != 200 and b"already" not in response.content:
            raise _engine_error(response.status, response.headers, response.content, {})

    async def unload_adapter(self, name: str) -> None:
        response = await self._post_json("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status not in (200, 404) and b"not found" not in response.content.lower():
            raise _engine_error(response.status, response.headers, response.content, {})

    async def health(self) -> bool:
        try:
            response = await self._client.request("GET", self.url + "/health", timeout_s=5.0)
        except LorafleetError:
            return False
        return response.status == 200

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post_json(self, path: str, payload: dict[str, Any]) -> HttpResponse:
        return await self._client.request(
            "POST", self.url + path, content=orjson.dumps(payload), headers=_JSON
        )


class _SSEStream(EngineStream):
    """The body as whole SSE events (lorafleet/sse.py), each yielded as soon as it is complete."""

    def __init__(self, response: HttpStream) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter()
        async for chunk in self._response.chunks():
            for event in splitter.feed(chunk):
                yield event
        tail = splitter.flush()  # an engine that ended without a blank line
        if tail is not None:
            yield tail

    async def aclose(self) -> None:
        await self._response.aclose()


_JSON = {"content-type": "application/json"}


def _headers(request_id: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "x-request-id": request_id}
    # The request's W3C trace context (server/tracing.py), so the engine's spans join its trace.
    context = request_context.current()
    if context is not None and context.traceparent is not None:
        headers["traceparent"] = context.traceparent
        if context.tracestate:
            headers["tracestate"] = context.tracestate
    return headers


def _engine_error(
    status: int, headers: Mapping[str, str], content: bytes, body: dict[str, Any]
) -> LorafleetError:
    """Translate a vLLM error body (`{"error": {...}}` or the older flat form)."""
    model = body.get("model")
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        payload = {}
    detail = payload.get("error", payload) if isinstance(payload, dict) else {}
    if not isinstance(detail, dict):
        detail = {"message": str(detail)}
    message = str(detail.get("message") or content[:500].decode(errors="replace") or status)
    param = detail.get("param")
    if status == 404 and isinstance(model, str):
        return ModelNotFoundError(model)
    if status == 400 and (
        param in _CONTEXT_PARAMS or (param == "max_tokens" and "max_model_len" in message)
    ):
        return ContextLengthExceededError(message, param="messages" if param else None)
    if status >= 500 and status not in (503, 504):
        return EngineError(f"engine error {status}: {message}")
    return error_for_status(
        status, message, param if isinstance(param, str) else None, _retry_after(headers)
    )


def _retry_after(headers: Mapping[str, str]) -> float:
    value = headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return 1.0
