"""Publishing to the gateway's admin API (httpx.MockTransport; a real local HTTP server for
the retries)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from lorafleet.adapters.training.publish import PublishError, RetryPolicy, publish_adapter

FAST = RetryPolicy(attempts=4, initial_wait_s=0.01, max_wait_s=0.05)


def client_answering(status: int, body: object, seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_publish_posts_the_absolute_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAFLEET_ADMIN_KEY", "s3cret")
    seen: list[httpx.Request] = []
    record = {"name": "court", "version": 2, "state": "registered"}
    with client_answering(201, record, seen) as client:
        result = publish_adapter(
            "http://gw.test/",
            name="court",
            source=tmp_path / "a",
            base_model="smollm2-135m-instruct",
            client=client,
        )
    assert result == record
    request = seen[0]
    assert request.method == "POST" and str(request.url) == "http://gw.test/v1/adapters"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert json.loads(request.content) == {
        "name": "court",
        "source": str((tmp_path / "a").resolve()),
        "base_model": "smollm2-135m-instruct",
    }


def test_no_auth_header_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORAFLEET_ADMIN_KEY", raising=False)
    seen: list[httpx.Request] = []
    with client_answering(201, {"name": "a", "version": 1}, seen) as client:
        publish_adapter("http://gw.test", name="a", source=tmp_path, base_model="b", client=client)
    assert "authorization" not in seen[0].headers


def test_refusal_carries_the_gateway_message(tmp_path: Path) -> None:
    error = {
        "error": {"message": "source is outside the allowed roots", "type": "invalid_request_error"}
    }
    with client_answering(400, error, []) as client, pytest.raises(PublishError) as info:
        publish_adapter("http://gw.test", name="a", source=tmp_path, base_model="b", client=client)
    assert info.value.status_code == 400
    assert "(400): source is outside the allowed roots" in str(info.value)


def test_unreachable_gateway(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        httpx.Client(transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(
            PublishError, match=r"cannot reach the gateway at http://gw\.test/v1/adapters"
        ) as info,
    ):
        publish_adapter(
            "http://gw.test", name="a", source=tmp_path, base_model="b", client=client, retry=FAST
        )
    assert "gave up after 4 attempts" in str(info.value)


class Gateway:
    """A real HTTP server on 127.0.0.1 answering POSTs from a script of (status, headers)."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = script
        self.posts = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                step = min(gateway.posts, len(gateway.script) - 1)
                status, headers = gateway.script[step]
                gateway.posts += 1
                ok = status in (200, 201)
                body = {"name": "a", "version": 1} if ok else {"error": {"message": "busy"}}
                payload = json.dumps(body).encode()
                self.send_response(status)
                for header, value in headers.items():
                    self.send_header(header, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Gateway:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def waits() -> list[float]:
    """The backoff waits publish_adapter asked for, instead of sleeping them."""
    return []


def test_a_busy_gateway_is_retried_until_it_takes_the_adapter(
    tmp_path: Path, waits: list[float]
) -> None:
    script = [(503, {}), (429, {"Retry-After": "0.03"}), (201, {})]
    with Gateway(script) as gateway:
        record = publish_adapter(
            gateway.url, name="a", source=tmp_path, base_model="b", retry=FAST, sleep=waits.append
        )
    assert record == {"name": "a", "version": 1}
    assert gateway.posts == 3
    assert waits[0] == pytest.approx(0.01)  # backoff
    assert waits[1] == pytest.approx(0.03)  # the gateway's Retry-After


def test_a_failing_gateway_is_given_up_on(tmp_path: Path, waits: list[float]) -> None:
    with Gateway([(500, {"Retry-After": "3600"})]) as gateway, pytest.raises(PublishError) as info:
        publish_adapter(
            gateway.url, name="a", source=tmp_path, base_model="b", retry=FAST, sleep=waits.append
        )
    assert gateway.posts == 4
    assert waits == [0.05, 0.05, 0.05]  # Retry-After is capped by max_wait_s
    assert info.value.status_code == 500
    assert str(info.value) == (
        "gateway could not take the adapter (500): busy (gave up after 4 attempts)"
    )


def test_a_refusal_is_not_retried(tmp_path: Path, waits: list[float]) -> None:
    with Gateway([(400, {}), (201, {})]) as gateway, pytest.raises(PublishError) as info:
        publish_adapter(
            gateway.url, name="a", source=tmp_path, base_model="b", retry=FAST, sleep=waits.append
        )
    assert (gateway.posts, waits, info.value.status_code) == (1, [], 400)


def test_a_closed_port_is_retried_then_given_up_on(tmp_path: Path, waits: list[float]) -> None:
    with Gateway([(201, {})]) as gateway:
        url = gateway.url  # nothing listens there any more: connection refused
    with pytest.raises(PublishError, match="cannot reach the gateway") as info:
        publish_adapter(
            url, name="a", source=tmp_path, base_model="b", retry=FAST, sleep=waits.append
        )
    assert waits == [0.01, 0.02, 0.04]
    assert "gave up after 4 attempts" in str(info.value)


def test_a_mistyped_url_is_not_retried(tmp_path: Path, waits: list[float]) -> None:
    with pytest.raises(PublishError, match="cannot reach the gateway at ftp://gw/v1/adapters"):
        publish_adapter(
            "ftp://gw", name="a", source=tmp_path, base_model="b", retry=FAST, sleep=waits.append
        )
    assert waits == []
