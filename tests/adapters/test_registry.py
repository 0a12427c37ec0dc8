"""The registry on both databases it supports: SQLite (embedded) and a real PostgreSQL."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorafleet.adapters.registry import (
    MIGRATIONS,
    REMOVED,
    AdapterNotFoundError,
    AdapterRegistry,
    RegistryConflictError,
)
from lorafleet.adapters.validation import AdapterFacts
from lorafleet.db import Database
from tests.postgres import temporary_database


def facts(n: int) -> AdapterFacts:
    return AdapterFacts(
        rank=8, alpha=16.0, target_modules=("q_proj", "v_proj"), base_model_name_or_path=None,
        size_bytes=1000 + n, sha256=f"{n:064x}",
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with temporary_database() as url:
        yield url


def open_registry(database_url: str) -> AdapterRegistry:
    database = Database(database_url)
    database.migrate(MIGRATIONS)
    return AdapterRegistry(database)


@pytest.fixture
def registry(database_url: str) -> Iterator[AdapterRegistry]:
    registry = open_registry(database_url)
    yield registry
    registry.database.close()


def add(registry: AdapterRegistry, name: str, n: int) -> int:
    version = registry.register(
        name, facts=facts(n), source=f"/src/{n}", path=f"/store/{n}", base_model="base"
    )
    return version.version


def test_versions_are_numbered_and_the_alias_follows(registry: AdapterRegistry) -> None:
    assert add(registry, "support", 1) == 1
    assert add(registry, "support", 2) == 2
    adapter = registry.get("support")
    assert adapter.current_version == 2
    assert [v.version for v in adapter.versions] == [1, 2]
    assert adapter.current is not None and adapter.current.engine_name == "support@2"


def test_registering_the_same_content_adds_no_version(registry: AdapterRegistry) -> None:
    add(registry, "a", 1)
    assert add(registry, "a", 1) == 1
    assert len(registry.get("a").versions) == 1


def test_rollback_and_forward(registry: AdapterRegistry) -> None:
    for n in (1, 2, 3):
        add(registry, "a", n)
    assert registry.rollback("a").current_version == 2
    assert registry.rollback("a").current_version == 1
    with pytest.raises(RegistryConflictError):
        registry.rollback("a")
    assert registry.rollback("a", 3).current_version == 3
    with pytest.raises(AdapterNotFoundError):
        registry.rollback("a", 9)


def test_remove_one_version_moves_the_alias(registry: AdapterRegistry) -> None:
    add(registry, "a", 1)
    add(registry, "a", 2)
    adapter = registry.remove("a", 2)
    assert adapter.current_version == 1
    assert adapter.version(2) is not None and adapter.version(2).state == REMOVED  # type: ignore[union-attr]
    with pytest.raises(AdapterNotFoundError):
        registry.remove("a", 2)


def test_remove_all_versions(registry: AdapterRegistry) -> None:
    add(registry, "a", 1)
    adapter = registry.remove("a")
    assert adapter.current_version is None
    assert registry.snapshot().adapters["a"].current is None
    # The name can be used again; numbering continues (versions are never reused).
    assert add(registry, "a", 5) == 2


def test_unknown_adapter(registry: AdapterRegistry) -> None:
    with pytest.raises(AdapterNotFoundError):
        registry.get("nope")
    with pytest.raises(AdapterNotFoundError):
        registry.remove("nope")


def test_generation_moves_on_every_write(registry: AdapterRegistry) -> None:
    g0 = registry.generation()
    add(registry, "a", 1)
    g1 = registry.generation()
    add(registry, "a", 2)
    registry.rollback("a")
    assert g0 < g1 < registry.generation()


def test_state_survives_a_restart(database_url: str) -> None:
    first = open_registry(database_url)
    add(first, "a", 1)
    add(first, "a", 2)
    first.rollback("a")
    add(first, "b", 3)
    first.database.close()
    second = AdapterRegistry(Database(database_url))
    assert second.database.migrate(MIGRATIONS) == 1  # already applied: nothing happens
    snapshot = second.snapshot()
    assert snapshot.adapters["a"].current_version == 1
    assert [v.version for v in snapshot.adapters["a"].versions] == [1, 2]
    assert snapshot.adapters["b"].current_version == 1
    second.database.close()


def test_concurrent_registrations_get_distinct_versions(database_url: str) -> None:
    registry = open_registry(database_url)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda n: add(registry, "hot", n), range(1, 9)))
    assert sorted(versions) == list(range(1, 9))
    assert registry.get("hot").current_version in range(1, 9)
    registry.database.close()


def test_a_failed_write_changes_nothing(registry: AdapterRegistry) -> None:
    add(registry, "a", 1)
    before = registry.snapshot()
    with pytest.raises(AdapterNotFoundError):
        registry.rollback("a", 7)
    assert registry.snapshot() == before
