"""`EngineClient` for a vLLM OpenAI server over HTTP: the only module that knows vLLM's URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from lorafleet.server.engine.base import Endpoint, EngineClient, EngineResult, EngineStream
from lorafleet.server.errors import (
    ContextLengthExceededError,
    EngineError,
    EngineTimeoutError,
    EngineUnavailableError,
    EngineUnreachableError,
    LorafleetError,
    ModelNotFoundError,
    error_for_status,
)

# vLLM reports "prompt (+ max_tokens) past max_model_len" as a 400 naming one of these params.
_CONTEXT_PARAMS = frozenset({"input_tokens", "input_text"})


def make_timeout(connect_s: float, first_byte_s: float, inter_token_s: float) -> httpx.Timeout:
    """httpx's read timeout bounds each wait for bytes: the first byte of a non-streamed answer
    (queueing + prefill + decode) and each gap between streamed events."""
    return httpx.Timeout(
        connect=connect_s, read=max(first_byte_s, inter_token_s), write=30.0, pool=connect_s
    )


class VLLMHttpEngine(EngineClient):
    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url.rstrip("/")
        self._client = client

    def __repr__(self) -> str:
        return f"VLLMHttpEngine({self.url!r})"

    async def generate(
        self, endpoint: Endpoint, body: dict[str, Any], request_id: str
    ) -> EngineResult:
        async with self._translate_transport_errors():
            response = await self._client.post(
                self.url + endpoint.value, content=orjson.dumps(body), headers=_headers(request_id)
            )
        if response.status_code != 200:
            raise _engine_error(response, response.content, body.get("model"))
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise EngineError("engine returned a body that is not JSON") from exc
        return EngineResult(raw=response.content, body=parsed)

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], request_id: str
    ) -> EngineStream:
        request = self._client.build_request(
            "POST",
            self.url + endpoint.value,
            content=orjson.dumps(body),
            headers=_headers(request_id),
        )
        async with self._translate_transport_errors():
            response = await self._client.send(request, stream=True)
        if response.status_code != 200:
            content = await response.aread()
            await response.aclose()
            raise _engine_error(response, content, body.get("model"))
        return _SSEStream(response)

    async def count_tokens(self, endpoint: Endpoint, body: dict[str, Any]) -> int:
        if endpoint is Endpoint.CHAT:
            payload = {"model": body["model"], "messages": body["messages"],
                       "add_generation_prompt": True}  # fmt: skip
            if body.get("tools"):
                payload["tools"] = body["tools"]
        else:
            payload = {"model": body["model"], "prompt": body["prompt"]}
        async with self._translate_transport_errors():
            response = await self._client.post(self.url + "/tokenize", json=payload)
        if response.status_code != 200:
            raise _engine_error(response, response.content, body.get("model"))
        return int(orjson.loads(response.content)["count"])

    async def list_models(self) -> list[dict[str, Any]]:
        async with self._translate_transport_errors():
            response = await self._client.get(self.url + "/v1/models")
        if response.status_code != 200:
            raise _engine_error(response, response.content, None)
        data: list[dict[str, Any]] = orjson.loads(response.content).get("data", [])
        return data

    async def load_adapter(self, name: str, path: str) -> None:
        payload = {"lora_name": name, "lora_path": path, "load_inplace": False}
        async with self._translate_transport_errors():
            response = await self._client.post(self.url + "/v1/load_lora_adapter", json=payload)
        # vLLM answers 400 "already loaded" for a repeated load: loading is idempotent for us.
        if response.status_code != 200 and b"already" not in response.content:
            raise _engine_error(response, response.content, None)

    async def unload_adapter(self, name: str) -> None:
        async with self._translate_transport_errors():
            response = await self._client.post(
                self.url + "/v1/unload_lora_adapter", json={"lora_name": name}
            )
        if response.status_code not in (200, 404) and b"not found" not in response.content.lower():
            raise _engine_error(response, response.content, None)

    async def health(self) -> bool:
        try:
            response = await self._client.get(self.url + "/health", timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()

    def _translate_transport_errors(self) -> _TransportErrors:
        return _TransportErrors(self.url)


class _TransportErrors:
    """Context manager mapping httpx failures to lorafleet errors (503 / 504)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, LorafleetError):
            return
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            raise EngineUnreachableError(f"engine {self.url} is not reachable") from exc
        if isinstance(exc, httpx.PoolTimeout):
            raise EngineUnavailableError(f"no connection to engine {self.url} is free") from exc
        if isinstance(exc, httpx.TimeoutException):
            raise EngineTimeoutError(f"engine {self.url} did not answer in time") from exc
        if isinstance(exc, httpx.HTTPError):
            raise EngineUnavailableError(f"engine {self.url} failed: {exc!r}") from exc


class _SSEStream(EngineStream):
    """Splits the byte stream into whole SSE events (`...\\n\\n`); yields each when complete."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = b""
        try:
            async for chunk in self._response.aiter_raw():
                buffer += chunk
                while True:
                    end = buffer.find(b"\n\n")
                    if end < 0:
                        break
                    yield buffer[: end + 2]
                    buffer = buffer[end + 2 :]
        except httpx.TimeoutException as exc:
            raise EngineTimeoutError("engine stalled in the middle of a stream") from exc
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(f"engine stream broke: {exc!r}") from exc
        if buffer.strip():
            yield buffer if buffer.endswith(b"\n\n") else buffer.rstrip(b"\n") + b"\n\n"

    async def aclose(self) -> None:
        await self._response.aclose()


def _headers(request_id: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-request-id": request_id}


def _engine_error(response: httpx.Response, content: bytes, model: Any) -> LorafleetError:
    """Translate a vLLM error body (`{"error": {...}}` or the older flat form)."""
    status = response.status_code
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
        status, message, param if isinstance(param, str) else None, _retry_after(response)
    )


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return 1.0
