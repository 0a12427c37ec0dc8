"""The gateway's database: one connection owner and one migration runner.

Several stores share one database, and each owns its tables: a table is created by a migration
declared next to the code that writes it, and no other module writes it.

    adapter registry  lorafleet.adapters.registry   adapters, adapter_versions, registry_state
    API keys, grants  lorafleet.server.keys         api_keys, tenant_grants, key_state
    usage metering    lorafleet.server.usage        usage
    this module       lorafleet.db                  schema_migrations (the schema version)

Migrations carry one number each, unique across the stores (the runner refuses duplicates), and
run in number order, each in its own transaction together with its row in `schema_migrations`:
a failed migration leaves nothing behind and is retried at the next start. Replicas starting at
once on PostgreSQL take turns (an advisory lock); SQLite's `BEGIN IMMEDIATE` does the same.
A store runs without the others' tables (the registry's tests migrate the registry alone), so
the schema version is the highest number applied, and a number is applied at most once.

SQLite (a file, the embedded default) and PostgreSQL (`postgresql://...`) through SQLAlchemy
Core. This module is synchronous; the gateway calls it from worker threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 7001  # pg_advisory_xact_lock key: one migrator at a time across replicas


@dataclass(frozen=True)
class Migration:
    """Statements portable between SQLite and PostgreSQL, applied together or not at all."""

    number: int
    owner: str  # the module that writes the tables these statements create
    statements: tuple[str, ...]


class Database:
    """The connection pool every store of one gateway shares, and the migration runner."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = _make_engine(url)
        self._closed = False
        sa.event.listen(self._engine, "checkin", self._close_if_closed)

    def close(self, wait_s: float = 2.0) -> None:
        """Close every connection, including those a worker thread still holds.

        `Engine.dispose()` closes only the pool's idle connections. A connection checked out
        at that moment (the gateway's registry or key poll runs in a worker thread that
        cancelling its task does not stop) went back afterwards into the discarded pool and
        stayed open there until the garbage collector found it ("connection ... was deleted
        while still open"). So wait up to `wait_s` for connections in use to come back, and
        close any connection that comes back after this, rather than pooling it."""
        self._closed = True
        pool = self._engine.pool
        deadline = time.monotonic() + wait_s
        while isinstance(pool, QueuePool) and pool.checkedout() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._engine.dispose()

    def _close_if_closed(self, _dbapi_conn: Any, entry: ConnectionPoolEntry) -> None:
        if self._closed:
            entry.close()  # it goes back to its pool closed (a later checkout reconnects)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it takes the write lock up front: a read-then-write
        transaction that found another writer's commit at its first write would fail)."""
        with self._engine.connect() as conn, conn.execution_options(lorafleet_write=True).begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (one consistent view for several SELECTs)."""
        with self._engine.connect() as conn, conn.begin():
            yield conn

    # --- schema ------------------------------------------------------------------------------
    def migrate(self, *migration_sets: Iterable[Migration]) -> int:
        """Apply the given stores' pending migrations in number order; return the schema
        version. Safe to run from several processes at once."""
        migrations = _ordered(migration_sets)
        with self._migrating() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                )
            )
        for migration in migrations:
            with self._migrating() as conn:
                if _applied(conn, migration.number):
                    continue
                for statement in migration.statements:
                    conn.execute(sa.text(statement))
                conn.execute(
                    sa.text("INSERT INTO schema_migrations (version, applied_at) VALUES (:v, :t)"),
                    {"v": migration.number, "t": time.time()},
                )
                log.info("database migration %d (%s) applied", migration.number, migration.owner)
        return self.schema_version()

    @contextmanager
    def _migrating(self) -> Iterator[Connection]:
        """A write transaction that one migrator at a time holds (PostgreSQL's CREATE TABLE IF
        NOT EXISTS is not safe against a concurrent one without it)."""
        with self.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            yield conn

    def schema_version(self) -> int:
        """The highest migration number applied (0: none)."""
        with self.read() as conn:
            value = conn.execute(sa.text("SELECT MAX(version) FROM schema_migrations"))
            return int(value.scalar_one() or 0)

    def applied(self) -> list[int]:
        with self.read() as conn:
            rows = conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version"))
            return [int(v) for v in rows.scalars()]


def _ordered(migration_sets: Iterable[Iterable[Migration]]) -> list[Migration]:
    by_number: dict[int, Migration] = {}
    for migration in (m for group in migration_sets for m in group):
        other = by_number.setdefault(migration.number, migration)
        if other is not migration and other != migration:
            raise ValueError(
                f"migration {migration.number} is claimed by {other.owner} and {migration.owner}"
            )
    return [by_number[n] for n in sorted(by_number)]


def _applied(conn: Connection, number: int) -> bool:
    row = conn.execute(
        sa.text("SELECT 1 FROM schema_migrations WHERE version = :v"), {"v": number}
    ).first()
    return row is not None


def _make_engine(database_url: str) -> Engine:
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    if database_url.startswith("sqlite"):
        database = sa.engine.make_url(database_url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(database_url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE: DDL and
            # the reads before a write ran outside it, so a failed migration left half its
            # tables behind. SQLAlchemy emits BEGIN itself instead (its documented recipe).
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("lorafleet_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return sa.create_engine(database_url, pool_pre_ping=True, pool_size=5, max_overflow=5)
