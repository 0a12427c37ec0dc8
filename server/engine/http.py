"""The HTTP client under `VLLMHttpEngine`: two implementations of one small interface.

- `AiohttpClient` is what the gateway runs on (`ENGINE_HTTP_CLIENT=aiohttp`, the default).
  Profiling the relay (docs/design/gateway-performance.md) showed httpx/httpcore spending about
  half of the event loop in `AsyncConnectionPool._assign_requests_to_connections`, which
  rescans every pooled connection each time a request is queued or finishes, so its cost grows
  with concurrency. aiohttp's connector hands out idle connections from a deque and parses
  responses in C.
- `HttpxClient` wraps an `httpx.AsyncClient`. It stays, deliberately, for two jobs: the
  in-process seam of the unit tests (an `httpx.MockTransport` around the fake engine: no
  socket, no server thread), and an operator's fallback (`ENGINE_HTTP_CLIENT=httpx`) should an
  aiohttp release misbehave. Neither job leaves the production client untested: the gateway
  tests on the shared `client` fixture (tests/server/conftest.py) run once per client, aiohttp
  over a real socket to the same fake, and the fault battery (tests/server/test_faults.py) runs
  both over real sockets.

Both raise lorafleet errors for transport failures: unreachable (connect refused or timed out)
→ `EngineUnreachableError`, a read that waited past its timeout → `EngineTimeoutError`, any other
broken connection → `EngineUnavailableError`. The read timeout bounds every wait for bytes: the
first byte of an answer and each gap between streamed events.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import aiohttp
import httpx

from lorafleet.server.errors import (
    EngineTimeoutError,
    EngineUnavailableError,
    EngineUnreachableError,
)

log = logging.getLogger(__name__)

Method = Literal["GET", "POST"]
ClientKind = Literal["aiohttp", "httpx"]


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    read_s: float  # each wait for bytes: the first byte, then each gap between events
    write_s: float = 30.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's and httpx's own mappings)
    content: bytes


class HttpStream(ABC):
    """A response whose status and headers have arrived and whose body has not."""

    status: int
    headers: Mapping[str, str]

    @abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, in pieces of any size."""

    @abstractmethod
    async def read(self) -> bytes: ...

    @abstractmethod
    async def aclose(self) -> None:
        """Close the response; unless the body was read to its end this closes the connection,
        which is how the engine learns to abort the request."""


class HttpClient(ABC):
    @abstractmethod
    async def request(
        self,
        method: Method,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResponse: ...

    @abstractmethod
    async def stream(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> HttpStream:
        """POST and return as soon as the status line and headers are in."""

    @abstractmethod
    async def aclose(self) -> None: ...


# --- aiohttp ------------------------------------------------------------------------------------


class AiohttpClient(HttpClient):
    """Create it inside the running event loop (the app's lifespan)."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
        )
        # vLLM (uvicorn) closes idle connections after 5 s: give them up a little earlier, so a
        # request is not sent down a connection the engine is closing.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0, ttl_dns_cache=10)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def request(
        self,
        method: Method,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else self._timeout
        with _aiohttp_errors(url):
            async with self._session.request(
                method, url, data=content, headers=headers, timeout=timeout
            ) as response:
                body = await response.read()
        return HttpResponse(response.status, response.headers, body)

    async def stream(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> HttpStream:
        with _aiohttp_errors(url):
            response = await self._session.post(url, data=content, headers=headers)
        return _AiohttpStream(url, response)

    async def aclose(self) -> None:
        await self._session.close()


class _AiohttpStream(HttpStream):
    def __init__(self, url: str, response: aiohttp.ClientResponse) -> None:
        self._url, self._response = url, response
        self.status = response.status
        self.headers = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        with _aiohttp_errors(self._url, mid_stream=True):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def read(self) -> bytes:
        with _aiohttp_errors(self._url, mid_stream=True):
            return await self._response.read()

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # finished: the connection goes back to the pool
        else:
            self._response.close()  # unfinished: drop the connection, the engine aborts


@contextmanager
def _aiohttp_errors(url: str, *, mid_stream: bool = False) -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise _unreachable(url) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise _timed_out(url, mid_stream) from exc
    except aiohttp.ClientError as exc:
        raise _broken(url, mid_stream, exc) from exc


# --- httpx --------------------------------------------------------------------------------------


class HttpxClient(HttpClient):
    def __init__(
        self, timeouts: Timeouts, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(
                connect=timeouts.connect_s,
                read=timeouts.read_s,
                write=timeouts.write_s,
                pool=timeouts.connect_s,
            ),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )

    async def request(
        self,
        method: Method,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        timeout = httpx.Timeout(timeout_s) if timeout_s else httpx.USE_CLIENT_DEFAULT
        with _httpx_errors(url):
            response = await self._client.request(
                method, url, content=content, headers=headers, timeout=timeout
            )
        return HttpResponse(response.status_code, response.headers, response.content)

    async def stream(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> HttpStream:
        request = self._client.build_request("POST", url, content=content, headers=headers)
        with _httpx_errors(url):
            response = await self._client.send(request, stream=True)
        return _HttpxStream(url, response)

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpxStream(HttpStream):
    def __init__(self, url: str, response: httpx.Response) -> None:
        self._url, self._response = url, response
        self.status = response.status_code
        self.headers = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._url, mid_stream=True):
            async for chunk in self._response.aiter_raw():
                yield chunk

    async def read(self) -> bytes:
        with _httpx_errors(self._url, mid_stream=True):
            return await self._response.aread()

    async def aclose(self) -> None:
        await self._response.aclose()


@contextmanager
def _httpx_errors(url: str, *, mid_stream: bool = False) -> Iterator[None]:
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _unreachable(url) from exc
    except httpx.PoolTimeout as exc:
        raise EngineUnavailableError("no connection to the engine is free") from exc
    except httpx.TimeoutException as exc:
        raise _timed_out(url, mid_stream) from exc
    except httpx.HTTPError as exc:
        raise _broken(url, mid_stream, exc) from exc


# --- the errors both clients raise ---------------------------------------------------------------


# Messages reach tenants (as the error body or a stream's last event), so they never name the
# engine: its address stays in the gateway's log.
def _unreachable(url: str) -> EngineUnreachableError:
    log.debug("engine %s is not reachable", url)
    return EngineUnreachableError("an engine replica is not reachable")


def _timed_out(url: str, mid_stream: bool) -> EngineTimeoutError:
    what = "stalled in the middle of a stream" if mid_stream else "did not answer in time"
    log.warning("engine %s %s", url, what)
    return EngineTimeoutError(f"the engine {what}")


def _broken(url: str, mid_stream: bool, exc: Exception) -> EngineUnavailableError:
    what = "stream broke" if mid_stream else "request failed"
    log.warning("engine %s: %s: %r", url, what, exc)
    return EngineUnavailableError(f"the engine {what}")


def make_client(
    kind: ClientKind, timeouts: Timeouts, transport: httpx.AsyncBaseTransport | None = None
) -> HttpClient:
    """The client the settings ask for; a test transport always means httpx."""
    if transport is not None or kind == "httpx":
        return HttpxClient(timeouts, transport)
    return AiohttpClient(timeouts)
