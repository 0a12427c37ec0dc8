"""Request heads cannot eat the gateway's memory: a real uvicorn server, raw-socket clients."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from lorafleet.server.bounded_http import MAX_HEAD_BYTES, MAX_URL_BYTES, BoundedHttpToolsProtocol
from lorafleet.server.runner import uvicorn_config
from lorafleet.server.settings import Settings
from tests.server.head_flood import Server, flood, server

MIB = 2**20


@pytest.fixture(scope="module")
def gateway() -> Iterator[Server]:
    """The gateway app under runner.py's uvicorn config, in a process of its own."""
    with server("bounded") as srv:
        yield srv


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request, read one response (the server closes or says its length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_the_gateway_runs_the_bounded_protocol() -> None:
    assert uvicorn_config(object(), Settings()).http is BoundedHttpToolsProtocol  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "status"), [("header", "431"), ("url", "414")])
def test_fifty_megabyte_heads_keep_memory_flat(gateway: Server, kind: str, status: str) -> None:
    result = flood(gateway, kind, 50 * MIB, clients=4)
    assert set(result["outcomes"]) <= {status, "closed"}, result
    assert status in result["outcomes"], result  # most clients read the answer
    # Stock httptools grew by 270-300 MiB here (docs/design/header-memory.md).
    assert result["rss_peak_mib"] - result["rss_before_mib"] < 16, result


@pytest.mark.parametrize(
    ("request_line", "extra", "status", "code"),
    [
        (b"GET /v1/models?q=" + b"a" * MAX_URL_BYTES + b" HTTP/1.1", b"", 414, "uri_too_long"),
        (b"GET /v1/models HTTP/1.1", b"x-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n", 431,
         "headers_too_large"),
    ],
)  # fmt: skip
def test_refusals_are_openai_errors_that_close_the_connection(
    gateway: Server, request_line: bytes, extra: bytes, status: int, code: str
) -> None:
    got, headers, body = exchange(gateway.port, request_line + b"\r\nhost: x\r\n" + extra + b"\r\n")
    assert got == status
    assert headers["connection"] == "close" and headers["x-request-id"]
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code)


def test_heads_under_the_bounds_and_bodies_are_served(gateway: Server) -> None:
    url = b"GET /health?q=" + b"a" * (MAX_URL_BYTES - 100) + b" HTTP/1.1\r\nhost: x\r\n\r\n"
    assert exchange(gateway.port, url)[0] == 200
    # A body far over the head bound, sent in the same packet as its head, is no head.
    payload = json.dumps(
        {"model": "nope", "messages": [{"role": "user", "content": "a" * 4 * MAX_HEAD_BYTES}]}
    ).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    request = head + b"content-length: %d\r\n\r\n" % len(payload) + payload
    status, _, body = exchange(gateway.port, request)
    assert (status, json.loads(body)["error"]["code"]) == (404, "model_not_found")


def test_many_requests_on_one_connection(gateway: Server) -> None:
    """The count starts again with each request: 200 small heads exceed the bound together."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        request = b"GET /health HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 1000 + b"\r\n\r\n"
        for _ in range(200):
            sock.sendall(request)
            data = b""
            while not data.endswith(b"}"):
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 ")
