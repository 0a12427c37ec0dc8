"""The ready line: logged once, when every base model has a ready engine, with a working curl."""

from __future__ import annotations

import logging
import shlex
import time

import pytest
from fastapi.testclient import TestClient

from lorafleet.server.announce import gateway_url, ready_message
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fake_vllm import MODEL, FakeVLLM


def test_the_message_names_the_url_the_models_and_a_runnable_curl() -> None:
    message = ready_message("http://127.0.0.1:8000", [MODEL, "other"])
    assert "http://127.0.0.1:8000" in message and f"{MODEL}, other" in message
    curl = shlex.split(message.split("try: ", 1)[1])
    assert curl[:2] == ["curl", "http://127.0.0.1:8000/v1/chat/completions"]
    assert f'"model": "{MODEL}"' in curl[-1] and '"max_tokens": 32' in curl[-1]
    assert "Authorization" not in message
    assert "$LORAFLEET_ADMIN_KEY" in ready_message("http://h:1", [MODEL], auth=True)


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", "http://127.0.0.1:8000"), ("::", "http://[::1]:8000"),
     ("10.0.0.5", "http://10.0.0.5:8000"), ("fd00::5", "http://[fd00::5]:8000")],
)  # fmt: skip
def test_a_wildcard_bind_is_announced_as_loopback(host: str, url: str) -> None:
    assert gateway_url(host, 8000) == url


def test_logged_once_when_the_engines_are_ready(
    settings: Settings, engine: FakeVLLM, caplog: pytest.LogCaptureFixture
) -> None:
    engine.healthy = False
    app = create_app(settings, transport=engine.transport())
    with (
        caplog.at_level(logging.INFO, logger="lorafleet.server.announce"),
        TestClient(app) as client,
    ):
        time.sleep(0.3)
        assert not [r for r in caplog.records if "is ready" in r.message]
        engine.healthy = True
        deadline = time.monotonic() + 5
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # a few more polls: still one line
    lines = [r.message for r in caplog.records if "is ready" in r.message]
    assert len(lines) == 1
    assert lines[0].startswith(f"lorafleet is ready on http://127.0.0.1:8000, serving {MODEL}")
