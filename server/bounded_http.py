"""uvicorn's httptools protocol with a bound on what a request head may make it buffer.

uvicorn's `HttpToolsProtocol` (the one `uvicorn[standard]` picks, httptools being installed)
appends every piece of the URL to one bytes object and httptools joins each header value the
same way, without any limit: four clients sending 50 MB URLs or header values held the gateway's
memory hostage, and `h11_max_incomplete_event_size` applies only to the h11 protocol, which is
not the one running. Measured figures: docs/design/header-memory.md.

`BoundedHttpToolsProtocol` counts the bytes of each request head (request line and headers) as
they arrive, before the parser sees them:

- a URL over `MAX_URL_BYTES` stops being buffered and is answered 414;
- a head over `MAX_HEAD_BYTES` is not fed to the parser and is answered 431;

both in OpenAI's error envelope, with `connection: close`, after which the connection is closed
and nothing more is read from it. `MAX_HEAD_BYTES` sits above the 64 KiB that
`HeaderLimitMiddleware` allows for the parsed headers, so heads between the two still get the
middleware's answer from inside the app; this bound is the one that protects memory.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lorafleet.server.errors import HeadersTooLargeError, LorafleetError, UriTooLongError

MAX_URL_BYTES = 16 * 1024
MAX_HEAD_BYTES = 96 * 1024
_REASONS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that refuses request heads over `MAX_HEAD_BYTES` (URLs over
    `MAX_URL_BYTES`) instead of buffering them. Bytes are counted from the start of a packet
    that begins inside a head; a pipelined head that starts in the middle of a packet is counted
    from the next packet on, so it may get one packet (asyncio reads up to 256 KiB) for free."""

    max_url_bytes = MAX_URL_BYTES
    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between requests or inside a head (not inside a body)
        self._head_bytes = 0
        self._url_bytes = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head and self._head_bytes >= self.max_head_bytes:
            self._refuse(self._headers_overflow())
            return
        # Inside a head, feed the parser only what still fits: a body sent in the same packet
        # as its head must not count as head.
        room = self.max_head_bytes - self._head_bytes if self._in_head else len(data)
        chunk, rest = data[:room], data[room:]
        if self._in_head:
            self._head_bytes += len(chunk)
        super().data_received(chunk)
        if (error := self._url_overflow()) is not None:
            self._refuse(error)
        elif rest and not self.transport.is_closing():
            self.data_received(rest)  # the head ended within `chunk`, or it is now over the bound

    def _url_overflow(self) -> LorafleetError | None:
        if self._url_bytes <= self.max_url_bytes:
            return None
        return UriTooLongError(f"The request URL is longer than {self.max_url_bytes} bytes.")

    def _headers_overflow(self) -> LorafleetError:
        return HeadersTooLargeError(
            f"The request line and headers are longer than {self.max_head_bytes} bytes."
        )

    def _refuse(self, error: LorafleetError) -> None:
        self._refused = True
        body = orjson.dumps(error.body())
        head = [
            b"HTTP/1.1 %d %s" % (error.status, _REASONS.get(error.status, b"Bad Request")),
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"connection: close",
            b"x-request-id: " + uuid.uuid4().hex.encode(),
        ]
        self.logger.warning("refused a request: %s", error.message)
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()  # flushes the answer; reads nothing more

    # Parser callbacks: while a URL is over the bound nothing reaches uvicorn's request cycle.

    def on_message_begin(self) -> None:
        self._url_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes <= self.max_url_bytes:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._url_overflow() is None:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        if self._url_overflow() is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._url_overflow() is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0  # the next request's head starts here
        if self._url_overflow() is None:
            super().on_message_complete()
