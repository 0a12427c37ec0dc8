"""Auth on (admin key set): keys, tenants, grants, and the tricks that must not get through."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from lorafleet.adapters.base_models import model_info
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM
from tests.server.conftest import wait_ready

ADMIN_KEY = "admin-key-0123456789abcdef"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
def client(
    settings: Settings, engine: FakeVLLM, adapter_root: Path, base_model_dir: Path
) -> Iterator[TestClient]:
    secured = settings.model_copy(
        update={
            "admin_key": SecretStr(ADMIN_KEY),
            "key_secret": SecretStr("s" * 40),
            "registry_poll_s": 0.05,
        }
    )
    with TestClient(create_app(secured, transport=engine.transport())) as test_client:
        wait_ready(test_client)
        base = model_info(base_model_dir)
        for name in ("alpha", "beta"):
            path = make_lora_dir(adapter_root / name, base, layers=range(1), seed=len(name))
            response = test_client.post(
                "/v1/adapters", json={"name": name, "source": str(path)}, headers=admin()
            )
            assert response.status_code == 201
        yield test_client


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(client: TestClient, tenant: str, adapters: list[str]) -> dict[str, Any]:
    response = client.post(
        "/v1/keys", json={"tenant": tenant, "adapters": adapters}, headers=admin()
    )
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    return body


def chat(client: TestClient, model: str, headers: dict[str, str]) -> Any:
    return client.post("/v1/chat/completions", json={"model": model, **CHAT}, headers=headers)


def test_requests_without_a_valid_key_are_401(client: TestClient) -> None:
    key = new_key(client, "acme", [])
    for headers in [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic " + ADMIN_KEY},
        bearer(key["key"][:-1] + "x"),
        bearer("lf_" + key["key_id"] + "_forged"),
    ]:
        response = chat(client, MODEL, headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/models").status_code == 401
    assert chat(client, MODEL, bearer(key["key"])).status_code == 200


@pytest.mark.parametrize("host", ["evil/", "x?y=1", "localhost/v1/models?", "a#b"])
def test_host_header_tricks_do_not_bypass_auth(client: TestClient, host: str) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": MODEL, **CHAT}, headers={"Host": host}
    )
    assert response.status_code in (400, 401)


def test_revoked_keys_are_401(client: TestClient) -> None:
    key = new_key(client, "acme", [])
    assert chat(client, MODEL, bearer(key["key"])).status_code == 200
    assert client.delete(f"/v1/keys/{key['key_id']}", headers=admin()).status_code == 200
    assert chat(client, MODEL, bearer(key["key"])).status_code == 401
    assert client.delete(f"/v1/keys/{key['key_id']}", headers=admin()).status_code == 404


def test_tenants_see_and_use_only_their_adapters(client: TestClient) -> None:
    a = new_key(client, "tenant-a", ["alpha"])
    b = new_key(client, "tenant-b", ["beta"])
    assert chat(client, "alpha", bearer(a["key"])).status_code == 200
    refused = chat(client, "beta", bearer(a["key"]))
    assert refused.status_code == 404  # looks exactly like an adapter that does not exist
    assert refused.json()["error"]["code"] == "model_not_found"
    assert chat(client, "alpha", bearer(b["key"])).status_code == 404
    seen = [m["id"] for m in client.get("/v1/models", headers=bearer(a["key"])).json()["data"]]
    assert seen == [MODEL, "alpha"]
    assert chat(client, MODEL, bearer(b["key"])).status_code == 200  # base models for all


def test_admin_routes_need_the_admin_key(client: TestClient) -> None:
    key = new_key(client, "acme", ["alpha"])
    for method, path in [("GET", "/v1/adapters"), ("POST", "/v1/keys"), ("GET", "/v1/keys"),
                         ("DELETE", "/v1/adapters/alpha")]:  # fmt: skip
        assert client.request(method, path, json={}, headers=bearer(key["key"])).status_code == 403
        assert client.request(method, path, json={}).status_code == 401
    assert client.get("/v1/adapters/alpha", headers=admin()).status_code == 200


def test_keys_are_stored_hashed(client: TestClient, settings: Settings) -> None:
    import sqlalchemy as sa

    key = new_key(client, "acme", [])
    listed = client.get("/v1/keys", headers=admin()).json()["data"]
    assert all("key" not in entry for entry in listed)
    engine = sa.create_engine(settings.registry_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT key_hash FROM api_keys")).scalars().all()
    engine.dispose()
    assert key["key"] not in stored and all(len(h) == 64 for h in stored)


def test_operations_routes_stay_open(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


@pytest.mark.parametrize(
    "update",
    [{"admin_key": ADMIN_KEY}, {"admin_key": "short", "key_secret": "s" * 40},
     {"admin_key": ADMIN_KEY, "key_secret": "too-short"}],
)  # fmt: skip
def test_unsafe_auth_settings_are_refused(update: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(**update)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/metrics", "/docs", "/openapi.json"])
def test_metrics_and_schema_are_the_admins(client: TestClient, path: str) -> None:
    tenant = new_key(client, "acme", ["alpha"])
    assert client.get(path).status_code == 401
    assert client.get(path, headers=bearer(tenant["key"])).status_code == 403
    assert client.get(path, headers=admin()).status_code == 200


def test_engine_failures_do_not_show_tenants_the_engine(
    client: TestClient, engine: FakeVLLM, settings: Settings
) -> None:
    tenant = bearer(new_key(client, "acme", ["alpha"])["key"])
    engine.break_after = 2  # a stream that breaks after it started: the error is an SSE event
    streamed = client.post(
        "/v1/chat/completions", json={"model": "alpha", "stream": True, **CHAT}, headers=tenant
    )
    assert streamed.status_code == 200 and '"error"' in streamed.text
    engine.break_after = None
    engine.refuse_connections = True  # and one that cannot start: a plain 503
    refused = chat(client, "alpha", tenant)
    assert refused.status_code == 503
    for text in (streamed.text, refused.text):
        for url in settings.engine_urls:
            assert url.split("//")[1].split(":")[0] not in text, text


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.example.com"])
def test_binding_beyond_loopback_without_auth_is_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="ALLOW_UNAUTHENTICATED"):
        Settings(host=host)
    assert Settings(host=host, allow_unauthenticated=True).host == host
    secured = Settings(host=host, admin_key=ADMIN_KEY, key_secret="s" * 40)  # type: ignore[arg-type]
    assert secured.host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_without_auth_is_fine(host: str) -> None:
    assert Settings(host=host).host == host
