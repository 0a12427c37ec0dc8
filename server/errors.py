"""One error hierarchy, one handler, one wire shape: OpenAI's error envelope.

    LorafleetError                      500 server_error
     ├── InvalidRequestError            400 invalid_request_error
     │    └── ContextLengthExceededError  400 code=context_length_exceeded
     ├── AuthenticationError            401
     ├── PermissionDeniedError          403
     ├── NotFoundError                  404
     │    └── ModelNotFoundError        404 code=model_not_found
     ├── ConflictError                  409
     ├── PayloadTooLargeError           413
     ├── HeadersTooLargeError           431
     ├── UriTooLongError                414
     ├── UnprocessableEntityError       422
     ├── RateLimitError                 429 (+ Retry-After)
     ├── EngineError                    502 upstream answered with nonsense
     │    ├── EngineUnavailableError    503 no ready engine, engine busy (+ Retry-After)
     │    │    └── EngineUnreachableError  503 connection refused: replica ejected
     │    └── EngineTimeoutError        504 no first byte within the timeout
     └── RegistryUnavailableError       503 the registry database cannot be reached (+ Retry-After)

Code raises; `install_error_handlers` turns every exception (FastAPI's validation errors, unknown
routes and unexpected bugs included) into `{"error": {"message", "type", "param", "code"}}` with
the status the OpenAI SDK maps to its exception classes. Tracebacks go to the log, never the wire.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from lorafleet.server.metrics import UNKNOWN_MODEL

log = logging.getLogger(__name__)


class LorafleetError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def sse_event(self) -> bytes:
        """The error as the last event of a stream that had already started."""
        return b"data: " + orjson.dumps(self.body()) + b"\n\n"


class InvalidRequestError(LorafleetError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class AdapterNotSupportedError(InvalidRequestError):
    """The base model's engine kind serves no adapters (llama.cpp): the client's request, not
    a failed load, so a 400 rather than a 502."""

    default_code = "adapter_not_supported"


class AuthenticationError(LorafleetError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(LorafleetError):
    status = 403
    type = "permission_error"


class NotFoundError(LorafleetError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model {model!r} does not exist or you do not have access to it.", param="model"
        )


class ConflictError(LorafleetError):
    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(LorafleetError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class HeadersTooLargeError(LorafleetError):
    status = 431
    type = "invalid_request_error"
    default_code = "headers_too_large"


class UriTooLongError(LorafleetError):
    status = 414
    type = "invalid_request_error"
    default_code = "uri_too_long"


class UnprocessableEntityError(LorafleetError):
    status = 422
    type = "invalid_request_error"


class RateLimitError(LorafleetError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float,
        code: str | None = None,
        headers: dict[str, str] | None = None,  # e.g. the key's x-ratelimit-* state
    ) -> None:
        retry_after = {"Retry-After": str(max(1, round(retry_after_s)))}
        super().__init__(message, code=code, headers={**(headers or {}), **retry_after})
        self.retry_after_s = retry_after_s


class EngineError(LorafleetError):
    status = 502
    type = "server_error"
    default_code = "engine_error"


class EngineUnavailableError(EngineError):
    status = 503
    default_code = "engine_unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after_s)))})
        self.retry_after_s = retry_after_s


class EngineUnreachableError(EngineUnavailableError):
    """The connection itself failed: the replica is ejected until its health check passes."""


class RegistryUnavailableError(LorafleetError):
    status = 503
    type = "server_error"
    default_code = "registry_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class EngineTimeoutError(EngineError):
    status = 504
    default_code = "engine_timeout"


_BY_STATUS: dict[int, type[LorafleetError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
}


def error_for_status(
    status: int, message: str, param: str | None = None, retry_after_s: float = 1.0
) -> LorafleetError:
    """The lorafleet error for an HTTP status (used for engine and framework errors)."""
    if status == 429:
        return RateLimitError(message, retry_after_s=retry_after_s)
    if status in (502, 503):
        return EngineUnavailableError(message, retry_after_s=retry_after_s)
    if status == 504:
        return EngineTimeoutError(message)
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = InvalidRequestError if 400 <= status < 500 else EngineError
    return cls(message, param=param)


def error_response(error: LorafleetError) -> Response:
    return Response(
        content=orjson.dumps(error.body()),
        status_code=error.status,
        headers=error.headers,
        media_type="application/json",
    )


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = first.get("msg", "Invalid request")
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error")
        return f"Request body is not valid JSON: {detail or 'parse error'}.", None
    if first.get("type") == "model_attributes_type":
        return "Request body must be a JSON object.", None
    return (f"{param}: {message}" if param else message), param


async def _handle_lorafleet(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LorafleetError)
    if exc.status >= 500:
        log.warning("request failed: %s %s", exc.status, exc.message)
    return error_response(exc)


async def _handle_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param = _describe_validation(exc)
    _count_refused(request, InvalidRequestError.status)
    return error_response(InvalidRequestError(message, param=param))


_INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


def _count_refused(request: Request, status: int) -> None:
    """Inference requests refused before serving sees them (bad JSON, failed validation) are
    still answered requests: count them, under `unknown` since no model was resolved."""
    gateway = getattr(request.state, "gateway", None)
    if gateway is not None and request.url.path in _INFERENCE_PATHS:
        gateway.metrics.requests.labels(UNKNOWN_MODEL, str(status)).inc()


async def _handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    if exc.status_code == 404:
        detail = f"Unknown route {request.method} {request.url.path}"
    error = error_for_status(exc.status_code, detail)
    response = error_response(error)
    if exc.status_code == 405:
        response.status_code = 405
    return response


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(LorafleetError("Internal server error."))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LorafleetError, _handle_lorafleet)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(Exception, _handle_unexpected)
