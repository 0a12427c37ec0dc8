"""Grants belong to a tenant: key creation never widens them; grants are revoked explicitly."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lorafleet.adapters.base_models import model_info
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import FakeVLLM
from tests.server.conftest import wait_ready
from tests.server.test_auth import admin, bearer, chat, new_key

ADMIN_KEY = "admin-key-0123456789abcdef"


def secured(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(
        update={
            "admin_key": SecretStr(ADMIN_KEY),
            "key_secret": SecretStr("s" * 40),
            "registry_poll_s": 0.05,
            **update,
        }
    )


def add_adapters(client: TestClient, adapter_root: Path, base_model_dir: Path) -> None:
    base = model_info(base_model_dir)
    for name in ("alpha", "beta"):
        path = adapter_root / name
        if not path.exists():
            make_lora_dir(path, base, layers=range(1), seed=len(name))
        response = client.post(
            "/v1/adapters", json={"name": name, "source": str(path)}, headers=admin()
        )
        assert response.status_code == 201, response.text


@pytest.fixture
def client(
    settings: Settings, engine: FakeVLLM, adapter_root: Path, base_model_dir: Path
) -> Iterator[TestClient]:
    with TestClient(create_app(secured(settings), transport=engine.transport())) as test_client:
        wait_ready(test_client)
        add_adapters(test_client, adapter_root, base_model_dir)
        yield test_client


def test_creating_a_key_does_not_widen_what_other_keys_reach(client: TestClient) -> None:
    first = new_key(client, "acme", ["alpha"])
    assert chat(client, "beta", bearer(first["key"])).status_code == 404
    wider = client.post(
        "/v1/keys", json={"tenant": "acme", "adapters": ["alpha", "beta"]}, headers=admin()
    )
    assert wider.status_code == 409, wider.text
    assert wider.json()["error"]["code"] == "grant_required"
    assert "beta" in wider.json()["error"]["message"]
    assert chat(client, "beta", bearer(first["key"])).status_code == 404
    # Naming what the tenant already has is fine, and so is naming nothing.
    second = new_key(client, "acme", ["alpha"])
    third = new_key(client, "acme", [])
    assert second["adapters"] == third["adapters"] == ["alpha"]


def test_grants_are_given_and_revoked_over_the_api(client: TestClient) -> None:
    key = new_key(client, "acme", ["alpha"])
    granted = client.post(
        "/v1/keys/tenants/acme/grants", json={"adapters": ["beta"]}, headers=admin()
    )
    assert granted.status_code == 200, granted.text
    assert granted.json() == {"tenant": "acme", "adapters": ["alpha", "beta"]}
    assert chat(client, "beta", bearer(key["key"])).status_code == 200

    revoked = client.delete("/v1/keys/tenants/acme/grants/beta", headers=admin())
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"tenant": "acme", "adapter": "beta", "revoked": True}
    assert chat(client, "beta", bearer(key["key"])).status_code == 404
    assert chat(client, "alpha", bearer(key["key"])).status_code == 200
    listed = client.get("/v1/keys/tenants/acme/grants", headers=admin())
    assert listed.json() == {"tenant": "acme", "adapters": ["alpha"]}
    keys = client.get("/v1/keys", headers=admin()).json()["data"]
    assert [k["adapters"] for k in keys] == [["alpha"]]

    again = client.delete("/v1/keys/tenants/acme/grants/beta", headers=admin())
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "grant_not_found"


def test_grant_routes_are_the_admins_and_refuse_bad_names(client: TestClient) -> None:
    tenant = bearer(new_key(client, "acme", ["alpha"])["key"])
    assert client.get("/v1/keys/tenants/acme/grants", headers=tenant).status_code == 403
    assert client.delete("/v1/keys/tenants/acme/grants/alpha", headers=tenant).status_code == 403
    assert (
        client.post("/v1/keys/tenants/acme/grants", json={"adapters": ["beta"]}).status_code == 401
    )
    for path, body in [
        ("/v1/keys/tenants/ac%20me/grants", {"adapters": ["beta"]}),
        ("/v1/keys/tenants/acme/grants", {"adapters": ["be/ta"]}),
        ("/v1/keys/tenants/acme/grants", {"adapters": []}),
        ("/v1/keys/tenants/acme/grants", {"adapters": "beta"}),
    ]:
        response = client.post(path, json=body, headers=admin())
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"
    for path in ["/v1/keys/tenants/acme/grants/a%00b", "/v1/keys/tenants/a%00b/grants/alpha"]:
        response = client.delete(path, headers=admin())
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "grant_not_found"


def test_a_failed_key_refresh_keeps_the_last_good_state_and_is_retried(
    settings: Settings, adapter_root: Path, base_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas on one database: a database error while one reloads keys (after the
    registry's own check succeeded) must not leave it on stale keys until some later change."""
    shared = secured(settings)  # both gateways use the same SQLite file under cache_dir
    with (
        TestClient(create_app(shared, transport=FakeVLLM().transport())) as one,
        TestClient(create_app(shared, transport=FakeVLLM().transport())) as two,
    ):
        for client in (one, two):
            wait_ready(client)
        add_adapters(one, adapter_root, base_model_dir)
        key = new_key(one, "acme", ["alpha"])
        poll_until(lambda: chat(two, "alpha", bearer(key["key"])).status_code == 200)

        store = two.app_state["gateway"].keys
        original, failures = store.load, []

        def fails_once() -> object:
            if not failures:
                failures.append("injected")
                raise sa.exc.OperationalError("SELECT", {}, Exception("connection reset"))
            return original()

        store.load = fails_once
        with caplog.at_level(logging.WARNING):
            assert one.delete(f"/v1/keys/{key['key_id']}", headers=admin()).status_code == 200
            took = poll_until(lambda: chat(two, "alpha", bearer(key["key"])).status_code == 401)
        print(f"\n[revocation honoured by the other replica after a failed refresh: {took:.2f}s]")
        assert failures == ["injected"]
        assert any("key refresh failed" in r.getMessage() for r in caplog.records)


def poll_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Seconds until `predicate()` held (fails the test after `timeout_s`)."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - started
