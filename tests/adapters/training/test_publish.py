"""Publishing to the gateway's admin API (httpx.MockTransport)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from lorafleet.adapters.training.publish import PublishError, publish_adapter


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
        ),
    ):
        publish_adapter("http://gw.test", name="a", source=tmp_path, base_model="b", client=client)
