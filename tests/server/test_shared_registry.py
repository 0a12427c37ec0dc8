"""Two gateway replicas sharing one PostgreSQL registry see each other's changes promptly."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lorafleet.adapters.base_models import model_info
from lorafleet.adapters.registry import AdapterRegistry
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM
from tests.postgres import temporary_database
from tests.server.conftest import wait_ready


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with temporary_database("lorafleet_shared") as url:
        yield url


def wait_for(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_alias_changes_propagate_between_gateways(
    settings: Settings, postgres_url: str, adapter_root: Path, base_model_dir: Path
) -> None:
    shared = settings.model_copy(update={"database_url": postgres_url, "registry_poll_s": 0.1})
    engines = [FakeVLLM(), FakeVLLM()]
    base = model_info(base_model_dir)
    v1 = make_lora_dir(adapter_root / "v1", base, seed=1, layers=range(1))
    v2 = make_lora_dir(adapter_root / "v2", base, seed=2, layers=range(1))
    chat = {"model": "shared", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with ExitStack() as stack:
        one, two = (
            stack.enter_context(TestClient(create_app(shared, transport=e.transport())))
            for e in engines
        )
        for client in (one, two):
            wait_ready(client)
        assert (
            one.post("/v1/adapters", json={"name": "shared", "source": str(v1)}).status_code == 201
        )
        wait_for(lambda: two.post("/v1/chat/completions", json=chat).status_code == 200)
        assert engines[1].requests[-1]["model"] == "shared@1"

        started = time.monotonic()
        assert (
            one.post("/v1/adapters", json={"name": "shared", "source": str(v2)}).status_code == 201
        )

        def second_sees_v2() -> bool:
            two.post("/v1/chat/completions", json=chat)
            return bool(engines[1].requests[-1]["model"] == "shared@2")

        wait_for(second_sees_v2)
        print(f"\n[alias change seen by the other gateway in {time.monotonic() - started:.2f}s]")
        assert two.post("/v1/adapters/shared/rollback", json={}).status_code == 200
        wait_for(lambda: one.get("/v1/models").json() and _current(one) == 1)
        assert MODEL in [m["id"] for m in two.get("/v1/models").json()["data"]]


def _current(client: TestClient) -> int:
    return int(client.get("/v1/adapters/shared").json()["current_version"])


def test_registry_outage_keeps_serving_and_writes_fail_cleanly(
    settings: Settings, postgres_url: str, adapter_root: Path, base_model_dir: Path
) -> None:
    from tests.tcp_proxy import TcpProxy

    proxy = TcpProxy(5432)
    proxy.start()
    via_proxy = postgres_url.replace(":5432/", f":{proxy.port}/")
    configured = settings.model_copy(update={"database_url": via_proxy, "registry_poll_s": 0.1})
    engine = FakeVLLM()
    base = model_info(base_model_dir)
    v1 = make_lora_dir(adapter_root / "v1", base, seed=1, layers=range(1))
    v2 = make_lora_dir(adapter_root / "v2", base, seed=2, layers=range(1))
    chat = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with TestClient(create_app(configured, transport=engine.transport())) as client:
        wait_ready(client)
        assert client.post("/v1/adapters", json={"name": "a", "source": str(v1)}).status_code == 201
        assert client.post("/v1/chat/completions", json=chat).status_code == 200

        proxy.cut()  # the database goes away
        time.sleep(0.5)
        for _ in range(5):  # already-resolved models keep working from the cached registry
            assert client.post("/v1/chat/completions", json=chat).status_code == 200
        refused = client.post("/v1/adapters", json={"name": "a", "source": str(v2)})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "registry_unavailable"
        assert "retry-after" in refused.headers

        proxy.start()  # it comes back on the same port
        wait_for(lambda: client.get("/v1/adapters/a").status_code == 200, timeout_s=15)
        retried = client.post("/v1/adapters", json={"name": "a", "source": str(v2)})
        assert retried.status_code == 201
        assert retried.json()["version"] == 2  # the failed attempt left nothing half-written
    proxy.cut()


def test_names_no_adapter_can_have_are_404_not_503(
    settings: Settings, engine: FakeVLLM, postgres_url: str
) -> None:
    shared = settings.model_copy(update={"database_url": postgres_url})
    with TestClient(create_app(shared, transport=engine.transport())) as client:
        wait_ready(client)
        for method, path in [("GET", "/v1/adapters/a%00b"), ("DELETE", "/v1/adapters/a%00b"),
                             ("POST", "/v1/adapters/a%00b/rollback")]:  # fmt: skip
            response = client.request(method, path, json={})
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "adapter_not_found"


def test_a_key_id_with_a_nul_byte_is_404_not_500(
    settings: Settings, engine: FakeVLLM, postgres_url: str
) -> None:
    from pydantic import SecretStr

    shared = settings.model_copy(
        update={
            "database_url": postgres_url,
            "admin_key": SecretStr("admin-key-0123456789abcdef"),
            "key_secret": SecretStr("k" * 40),
        }
    )
    admin = {"Authorization": "Bearer admin-key-0123456789abcdef"}
    with TestClient(create_app(shared, transport=engine.transport())) as client:
        wait_ready(client)
        response = client.delete("/v1/keys/ab%00cd", headers=admin)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "key_not_found"


def test_a_shutdown_during_a_registry_poll_leaves_no_connection_open(
    settings: Settings, engine: FakeVLLM, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry poll runs in a worker thread that cancelling the poll's task does not stop:
    the gateway closed its database while that thread held a connection, which then stayed open
    until the garbage collector warned about it (during whichever test ran next)."""
    polling, polled = threading.Event(), threading.Event()
    generation = AdapterRegistry.generation

    def slow_generation(registry: AdapterRegistry) -> int:
        try:
            with registry.database.read() as conn:
                conn.execute(sa.text("SELECT 1"))
                polling.set()
                time.sleep(0.3)  # the gateway shuts down meanwhile
            return generation(registry)  # and this one starts after the database closed
        finally:
            polled.set()

    monkeypatch.setattr(AdapterRegistry, "generation", slow_generation)
    shared = settings.model_copy(update={"database_url": postgres_url, "registry_poll_s": 0.05})
    with TestClient(create_app(shared, transport=engine.transport())) as client:
        wait_ready(client)
        assert polling.wait(5)
    assert polled.wait(5)
    del client
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
