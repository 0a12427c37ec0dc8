"""Engine faults through real sockets: timeouts, refusals, 429/503 with Retry-After, engines
dying or stalling mid-stream, and clients that walk away (reliability.md items 11-15)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fault_engine import MODEL, Faults, free_port, make_app, serve_in_thread

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@dataclass
class Rig:
    faults: Faults
    gateway: str
    engine: str


@pytest.fixture(params=["aiohttp", "httpx"])
def client_kind(request: pytest.FixtureRequest) -> str:
    """Both engine HTTP clients face the same faults over real sockets."""
    return str(request.param)


@pytest.fixture
def rig(settings: Settings, client_kind: str) -> Iterator[Rig]:
    faults = Faults()
    with serve_in_thread(make_app(faults)) as engine_url:
        configured = settings.model_copy(
            update={
                "engine_urls": [engine_url],
                "engine_http_client": client_kind,
                "first_byte_timeout_s": 1.0,
                "inter_token_timeout_s": 1.0,
                "retry_max_wait_s": 1.5,
            }
        )
        with serve_in_thread(create_app(configured)) as gateway_url:
            deadline = time.monotonic() + 10
            while httpx.get(f"{gateway_url}/ready").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            yield Rig(faults, gateway_url, engine_url)


def post(rig: Rig, body: dict[str, object], timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{rig.gateway}/v1/chat/completions", json=body, timeout=timeout)


def sse(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]


def test_stall_before_first_byte_is_504(rig: Rig) -> None:
    rig.faults.stall_first_byte_s = 5
    started = time.monotonic()
    response = post(rig, CHAT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "engine_timeout"
    assert time.monotonic() - started < 4


def test_stall_mid_stream_ends_with_an_error_event(rig: Rig) -> None:
    rig.faults.stall_after_events = 2
    started = time.monotonic()
    events = sse(post(rig, {**CHAT, "stream": True}))
    assert time.monotonic() - started < 5
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_timeout"
    assert 1 <= len(events) - 2 <= 3  # what arrived before the stall was relayed


def test_engine_dying_mid_stream_ends_with_an_error_event(rig: Rig) -> None:
    rig.faults.die_after_events = 3
    events = sse(post(rig, {**CHAT, "stream": True}))
    assert events[-1] == "[DONE]"
    assert "error" in json.loads(events[-2])


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_then_the_request_succeeds(rig: Rig, status: int) -> None:
    rig.faults.status, rig.faults.status_times, rig.faults.retry_after = status, 1, "1"
    started = time.monotonic()
    response = post(rig, CHAT)
    assert response.status_code == 200
    assert rig.faults.requests == 2
    assert time.monotonic() - started >= 0.9  # it waited as told


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_not_retried(rig: Rig, status: int) -> None:
    rig.faults.status = status
    assert post(rig, CHAT).status_code in (400, 404, 422)
    assert rig.faults.requests == 1


def test_refused_connection_is_a_quick_503(settings: Settings, client_kind: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    configured = settings.model_copy(
        update={"engine_urls": [dead], "retry_max_wait_s": 0.1, "engine_http_client": client_kind}
    )
    with serve_in_thread(create_app(configured)) as gateway:
        started = time.monotonic()
        response = httpx.post(f"{gateway}/v1/chat/completions", json=CHAT, timeout=30)
        assert response.status_code == 503
        assert "retry-after" in response.headers
        assert time.monotonic() - started < 3


def test_client_disconnects_abort_the_upstream_request(rig: Rig) -> None:
    rig.faults.tokens, rig.faults.token_gap_s = 200, 0.02
    for _ in range(30):
        with httpx.stream(
            "POST", f"{rig.gateway}/v1/chat/completions", json={**CHAT, "stream": True},
            timeout=30,
        ) as response:  # fmt: skip
            for _line in response.iter_lines():
                break  # walk away after the first event
    deadline = time.monotonic() + 10
    while rig.faults.active_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.faults.active_streams == 0  # nothing leaked on the engine side
    assert rig.faults.aborted_streams == 30
    assert post(rig, CHAT).status_code == 200  # and the gateway is fine


@pytest.mark.parametrize(
    "headers",
    [{"x-big": "a" * 1_000_000}, {f"x-h{i}": "v" for i in range(5_000)}],
    ids=["1MB-header", "5000-headers"],
)
def test_huge_headers_are_refused(rig: Rig, headers: dict[str, str]) -> None:
    try:
        response = httpx.post(
            f"{rig.gateway}/v1/chat/completions", json=CHAT, headers=headers, timeout=10
        )
    except httpx.HTTPError:
        pass  # the server closed the connection: also a refusal
    else:
        assert response.status_code == 431
        assert response.json()["error"]["code"] == "headers_too_large"
    assert rig.faults.requests == 0
    assert post(rig, CHAT).status_code == 200
