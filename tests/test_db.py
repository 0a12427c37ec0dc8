"""The shared database: one migration runner, tables owned by one module each, upgrades in place.

Runs on SQLite (embedded) and on the machine's PostgreSQL.
"""

from __future__ import annotations

import gc
import importlib
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from lorafleet.adapters.registry import MIGRATIONS as REGISTRY_MIGRATIONS
from lorafleet.adapters.registry import AdapterRegistry
from lorafleet.db import Database, Migration
from lorafleet.server.app import STORE_MIGRATIONS
from lorafleet.server.keys import KeyStore
from lorafleet.server.usage import UsageMeter
from tests.postgres import temporary_database

REPO = Path(__file__).resolve().parent.parent
ALL = [m for group in STORE_MIGRATIONS for m in group]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    with temporary_database() as url:
        yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


def test_every_store_migrates_into_one_schema_version(database: Database) -> None:
    assert sorted(m.number for m in ALL) == list(range(1, len(ALL) + 1))  # no gaps, no twins
    assert database.migrate(*STORE_MIGRATIONS) == len(ALL)
    assert database.migrate(*STORE_MIGRATIONS) == len(ALL)  # applied once: nothing happens
    assert database.applied() == list(range(1, len(ALL) + 1))


def test_one_store_migrates_alone_and_the_rest_follow(database: Database) -> None:
    assert database.migrate(REGISTRY_MIGRATIONS) == 1
    assert database.migrate(*STORE_MIGRATIONS) == len(ALL)


def test_two_stores_cannot_claim_one_number(database: Database) -> None:
    twin = Migration(1, "tests.elsewhere", ("CREATE TABLE twin (x INTEGER)",))
    with pytest.raises(ValueError, match="migration 1 is claimed by"):
        database.migrate(REGISTRY_MIGRATIONS, [twin])


def test_a_failed_migration_leaves_nothing_behind(database: Database) -> None:
    broken = Migration(99, "tests", ("CREATE TABLE half_done (x INTEGER)", "NOT SQL"))
    with pytest.raises(sa.exc.SQLAlchemyError):
        database.migrate(REGISTRY_MIGRATIONS, [broken])
    with database.read() as conn:
        tables = sa.inspect(conn).get_table_names()
    assert "adapters" in tables  # the earlier migrations committed, one by one
    assert "half_done" not in tables
    assert database.applied() == [1]
    # The failed migration's connection sits in a reference cycle with its exception: collect
    # it while its database exists, or psycopg's __del__ warns during some later test.
    gc.collect()


def test_close_closes_a_connection_still_in_use() -> None:
    """A connection a worker thread holds across close() is closed when it comes back, not left
    open in the discarded pool for the garbage collector (psycopg's ResourceWarning, which broke
    whichever test ran next)."""
    with temporary_database() as url:
        database = Database(url)
        with database.read() as conn:  # the gateway's poll, mid-query at shutdown
            conn.execute(sa.text("SELECT 1"))
            raw = conn.connection.dbapi_connection
            database.close(wait_s=0)
        assert raw is not None and raw.closed
        with database.read() as conn:  # a query that started after close()
            raw = conn.connection.dbapi_connection
        assert raw is not None and raw.closed
        del database, conn, raw
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


# The schema as the code before this runner created it (commit ad58ecd): one list in the
# registry for every store's tables, versions 1-3 in schema_migrations.
OLD_SCHEMA = [
    "CREATE TABLE schema_migrations "
    "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE adapters (name TEXT PRIMARY KEY, current_version INTEGER, "
    "created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE adapter_versions (name TEXT NOT NULL REFERENCES adapters(name), "
    "version INTEGER NOT NULL, source TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, "
    "base_model TEXT NOT NULL, rank INTEGER NOT NULL, alpha DOUBLE PRECISION NOT NULL, "
    "target_modules TEXT NOT NULL, size_bytes BIGINT NOT NULL, manifest TEXT, "
    "state TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, version))",
    "CREATE TABLE registry_state (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL)",
    "INSERT INTO registry_state (id, generation) VALUES (1, 7)",
    "CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL, "
    "tenant TEXT NOT NULL, rpm INTEGER, tpm INTEGER, budget_tokens BIGINT, "
    "created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)",
    "CREATE TABLE tenant_grants (tenant TEXT NOT NULL, adapter TEXT NOT NULL, "
    "PRIMARY KEY (tenant, adapter))",
    "CREATE TABLE usage (day TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL, "
    "model TEXT NOT NULL, requests BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL, "
    "completion_tokens BIGINT NOT NULL, PRIMARY KEY (day, tenant, key_id, model))",
    "INSERT INTO schema_migrations VALUES (1, 1.0), (2, 2.0), (3, 3.0)",
]
OLD_ROWS = [
    "INSERT INTO adapters VALUES ('support', 1, 10.0, 10.0)",
    "INSERT INTO adapter_versions VALUES ('support', 1, '/src', '/store/ab', 'ab', 'base', 8, "
    "16.0, '[\"q_proj\"]', 1000, NULL, 'registered', 10.0)",
    "INSERT INTO api_keys VALUES ('00aa', 'h1', 'acme', 60, NULL, 5000, 11.0, NULL)",
    "INSERT INTO api_keys VALUES ('00bb', 'h2', 'acme', NULL, NULL, NULL, 12.0, 13.0)",
    "INSERT INTO tenant_grants VALUES ('acme', 'support')",
    "INSERT INTO usage VALUES ('2026-11-30', 'acme', '00aa', 'support', 3, 120, 30)",
]


def test_a_database_made_by_the_previous_code_upgrades_in_place(database: Database) -> None:
    with database.begin() as conn:
        for statement in OLD_SCHEMA + OLD_ROWS:
            conn.execute(sa.text(statement))

    assert database.migrate(*STORE_MIGRATIONS) == 4
    assert database.applied() == [1, 2, 3, 4]

    snapshot = AdapterRegistry(database).snapshot()
    assert snapshot.generation == 7
    assert snapshot.adapters["support"].current is not None
    assert snapshot.adapters["support"].current.sha256 == "ab"
    keys = KeyStore(database, "s" * 40)
    loaded = keys.load()
    assert sorted(loaded.keys) == ["00aa", "00bb"]
    assert loaded.keys["00aa"].budget_tokens == 5000
    assert loaded.keys["00bb"].revoked_at == 13.0
    assert loaded.grants == {"acme": frozenset({"support"})}
    meter = UsageMeter(database)
    assert meter.spent_by_key() == {"00aa": 150}
    # The upgraded tables take writes, each store bumping its own generation.
    generation = keys.generation()
    assert keys.revoke_grant("acme", "support")
    assert keys.generation() == generation + 1
    assert AdapterRegistry(database).generation() == 7
    meter.record("acme", "00aa", "support", 10, 5)
    assert meter.flush() == 1
    assert meter.spent_by_key() == {"00aa": 165}


_WRITE = re.compile(
    r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|CREATE\s+TABLE(?:\s+IF\s+NOT\s+EXISTS)?"
    r"|ALTER\s+TABLE|DROP\s+TABLE(?:\s+IF\s+EXISTS)?)\s+(\w+)",
    re.IGNORECASE,
)


def _owners() -> dict[str, Path]:
    """Table -> the file of the module that declares (and so owns) it."""
    owners = {"schema_migrations": Path(importlib.import_module("lorafleet.db").__file__ or "")}
    for migration in ALL:
        module = Path(importlib.import_module(migration.owner).__file__ or "").resolve()
        for statement in migration.statements:
            match = re.match(r"\s*CREATE TABLE (\w+)", statement)
            if match:
                owners[match.group(1)] = module
    return {table: path.resolve() for table, path in owners.items()}


def test_no_module_writes_another_modules_tables() -> None:
    owners = _owners()
    assert set(owners) >= {"adapters", "api_keys", "tenant_grants", "usage", "key_state"}
    trespass = []
    for folder in ("lorafleet", "server", "adapters", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for match in _WRITE.finditer(text):
                table = match.group(1)
                if table in owners and owners[table] != path.resolve():
                    trespass.append(f"{path.relative_to(REPO)} writes {table}")
    assert not trespass, trespass


def test_migrations_take_turns(database_url: str) -> None:
    """Two gateway replicas starting at once migrate without tripping over each other."""
    import concurrent.futures

    databases = [Database(database_url) for _ in range(3)]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        versions = list(pool.map(lambda db: db.migrate(*STORE_MIGRATIONS), databases))
    assert versions == [len(ALL)] * 3, time.monotonic() - started
    assert databases[0].applied() == list(range(1, len(ALL) + 1))
    for database in databases:
        database.close(wait_s=0)
