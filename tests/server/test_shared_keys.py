"""Two gateway replicas on one PostgreSQL database honour each other's grant and key changes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fake_vllm import FakeVLLM
from tests.postgres import temporary_database
from tests.server.conftest import wait_ready
from tests.server.test_auth import admin, bearer, chat, new_key
from tests.server.test_grants import add_adapters, poll_until, secured

POLL_S = 0.2


@pytest.fixture
def replicas(
    settings: Settings, adapter_root: Path, base_model_dir: Path
) -> Iterator[tuple[TestClient, TestClient]]:
    with temporary_database("lorafleet_keys") as url, ExitStack() as stack:
        shared = secured(settings, database_url=url, registry_poll_s=POLL_S)
        one, two = (
            stack.enter_context(TestClient(create_app(shared, transport=FakeVLLM().transport())))
            for _ in range(2)
        )
        for client in (one, two):
            wait_ready(client)
        add_adapters(one, adapter_root, base_model_dir)
        yield one, two


def test_a_grant_revoked_on_one_replica_is_refused_on_the_other(
    replicas: tuple[TestClient, TestClient],
) -> None:
    one, two = replicas
    key = new_key(one, "acme", ["alpha", "beta"])
    poll_until(lambda: chat(two, "beta", bearer(key["key"])).status_code == 200)

    assert one.delete("/v1/keys/tenants/acme/grants/beta", headers=admin()).status_code == 200
    took = poll_until(lambda: chat(two, "beta", bearer(key["key"])).status_code == 404)
    print(f"\n[grant revocation refused by the other replica after {took:.2f}s, poll {POLL_S}s]")
    assert took < 5 * POLL_S + 1.0  # one poll, plus a loaded CI machine's slack
    assert chat(two, "alpha", bearer(key["key"])).status_code == 200


def test_a_revocation_survives_a_failed_refresh_on_the_other_replica(
    replicas: tuple[TestClient, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    one, two = replicas
    key = new_key(one, "acme", ["alpha"])
    poll_until(lambda: chat(two, "alpha", bearer(key["key"])).status_code == 200)
    store = two.app_state["gateway"].keys
    original, failures = store.load, []

    def fails_once() -> object:  # the database blips during the other replica's reload
        if not failures:
            failures.append("injected")
            raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))
        return original()

    store.load = fails_once
    with caplog.at_level(logging.WARNING):
        assert one.delete("/v1/keys/tenants/acme/grants/alpha", headers=admin()).status_code == 200
        took = poll_until(lambda: chat(two, "alpha", bearer(key["key"])).status_code == 404)
    print(f"\n[revocation honoured after one failed refresh in {took:.2f}s, poll {POLL_S}s]")
    assert failures == ["injected"]
    assert took < 5 * POLL_S + 1.0
    assert [r for r in caplog.records if "key refresh failed" in r.getMessage()]
