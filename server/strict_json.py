"""Request bodies parsed as strictly as the rest of the gateway writes them.

Python's `json` accepts JSON that the gateway cannot pass on: escaped lone surrogates
(`"\\udc80"`, not encodable as UTF-8), integers of any size (the engine and orjson stop at 64
bits) and nesting deep enough to exhaust the interpreter's stack. Accepted, they blew up later
as 500s. Every route parses its body here instead, and such bodies get a 400 up front.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

# Signed 64 bits: what orjson, the engine and the registry's integer columns all hold (orjson
# would parse longer integers as floats, losing digits).
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# 20 digits or more may be out of range; only then is the (slower) exact check run.
_LONG_NUMBER = re.compile(rb"\d{20}")


def parse_json_body(raw: bytes) -> Any:
    """The body's JSON value, or `json.JSONDecodeError` (FastAPI answers those with a 400)."""
    try:
        value = orjson.loads(raw)  # refuses lone surrogates, NaN and depth beyond 1024
    except orjson.JSONDecodeError as exc:
        raise json.JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
    try:
        # orjson serialises at most 255 levels; the engine body is written with it, so a
        # deeper value must fail here rather than on the way out.
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise json.JSONDecodeError("nesting is deeper than 255 levels", "", 0) from None
    if _LONG_NUMBER.search(raw):
        try:
            json.loads(raw, parse_int=_int64)
        except ValueError as exc:  # _int64's refusal (JSONDecodeError is a ValueError too)
            raise json.JSONDecodeError(str(exc), "", 0) from None
    return value


def _int64(digits: str) -> int:
    number = int(digits)
    if not _INT_MIN <= number <= _INT_MAX:
        raise ValueError(f"integer {digits[:24]}... does not fit in 64 bits")
    return number


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An `APIRoute` whose handler reads its JSON body with `parse_json_body`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
