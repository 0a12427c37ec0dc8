"""`lorafleet keys ...` against a real gateway on a loopback port (HTTP all the way)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from lorafleet.cli import main
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fake_vllm import FakeVLLM
from tests.server.test_grants import ADMIN_KEY, secured

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
def gateway_url(
    settings: Settings, adapter_root: Path, base_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    app = create_app(secured(settings), transport=FakeVLLM().transport())
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    monkeypatch.setenv("LORAFLEET_ADMIN_KEY", ADMIN_KEY)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        from tests.server.test_grants import add_adapters

        add_adapters(admin, adapter_root, base_model_dir)  # type: ignore[arg-type]
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def chat(url: str, key: str, model: str) -> int:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, **CHAT},
        headers={"Authorization": f"Bearer {key}"},
    )
    return response.status_code


def test_grant_and_revoke_grant_from_the_command_line(
    gateway_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def keys(*argv: str) -> int:
        return main(["keys", "--url", gateway_url, *argv])

    assert keys("create", "--tenant", "acme", "--adapters", "alpha") == 0
    key = capsys.readouterr().out.strip()
    assert chat(gateway_url, key, "beta") == 404

    assert keys("grant", "--tenant", "acme", "beta") == 0
    assert "alpha,beta" in capsys.readouterr().out
    assert chat(gateway_url, key, "beta") == 200

    assert keys("revoke-grant", "--tenant", "acme", "beta") == 0
    assert chat(gateway_url, key, "beta") == 404
    assert keys("grants", "--tenant", "acme") == 0
    assert capsys.readouterr().out.strip().endswith("acme: alpha")

    with pytest.raises(SystemExit, match=r"404: .*grant_not_found"):
        keys("revoke-grant", "--tenant", "acme", "beta")
    with pytest.raises(SystemExit, match=r"409: .*grant_required"):
        keys("create", "--tenant", "acme", "--adapters", "beta")
