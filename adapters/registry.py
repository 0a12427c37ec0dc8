"""The adapter registry: names, immutable numbered versions and an alias, in a real database.

    adapters          name, current_version (the alias; NULL once every version is removed)
    adapter_versions  (name, version) -> source, store path, sha256, base model, rank, alpha,
                      target modules, size, manifest, state (registered | removed), created_at
    registry_state    one row: `generation`, bumped by every write, so gateway replicas sharing
                      a PostgreSQL registry notice changes with one cheap query

These tables are the registry's alone: it declares their migrations (`MIGRATIONS`), which the
shared runner in `lorafleet.db` applies, and no other module writes them.
Every write is one transaction: a failed registration leaves the registry exactly as it was.
This module is synchronous; the gateway calls it from a worker thread.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lorafleet.adapters.validation import AdapterFacts
from lorafleet.db import Database, Migration

# The registry's tables (lorafleet.db runs the migrations; numbers are unique across stores).
MIGRATIONS = (
    Migration(
        1,
        __name__,
        (
            """CREATE TABLE adapters (
                name TEXT PRIMARY KEY,
                current_version INTEGER,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE adapter_versions (
                name TEXT NOT NULL REFERENCES adapters(name),
                version INTEGER NOT NULL,
                source TEXT NOT NULL,
                path TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                base_model TEXT NOT NULL,
                rank INTEGER NOT NULL,
                alpha DOUBLE PRECISION NOT NULL,
                target_modules TEXT NOT NULL,
                size_bytes BIGINT NOT NULL,
                manifest TEXT,
                state TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (name, version)
            )""",
            "CREATE TABLE registry_state (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL)",
            "INSERT INTO registry_state (id, generation) VALUES (1, 0)",
        ),
    ),
)

REGISTERED = "registered"
REMOVED = "removed"


class RegistryError(Exception):
    """Base of registry errors; `code` is machine-readable."""

    code = "registry_error"


class AdapterNotFoundError(RegistryError):
    code = "adapter_not_found"


class RegistryConflictError(RegistryError):
    code = "conflict"


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    version: int
    source: str
    path: str
    sha256: str
    base_model: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    size_bytes: int
    state: str
    created_at: float
    manifest: dict[str, Any] | None = None

    @property
    def engine_name(self) -> str:
        """The name the engine knows this version by: one per version, so a new version never
        reuses an old version's prefix cache."""
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "base_model": self.base_model,
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": list(self.target_modules),
            "source": self.source,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "state": self.state,
            "created_at": self.created_at,
            "manifest": self.manifest,
        }


@dataclass(frozen=True)
class Adapter:
    name: str
    current_version: int | None
    versions: tuple[AdapterVersion, ...] = field(default_factory=tuple)

    @property
    def current(self) -> AdapterVersion | None:
        return next((v for v in self.versions if v.version == self.current_version), None)

    def version(self, number: int) -> AdapterVersion | None:
        return next((v for v in self.versions if v.version == number), None)


@dataclass(frozen=True)
class Snapshot:
    """Everything servable, read in one transaction: what the gateway caches."""

    generation: int
    adapters: dict[str, Adapter]


class AdapterRegistry:
    """The registry's reads and writes, on a `Database` it shares with the other stores (run
    `database.migrate(MIGRATIONS)` first; the gateway migrates every store at start-up)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # --- writes ------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        facts: AdapterFacts,
        source: str,
        path: str,
        base_model: str,
        manifest: dict[str, Any] | None = None,
    ) -> AdapterVersion:
        """Add a new version of `name` and point the alias at it, atomically. Registering the
        content the alias already points to adds nothing and returns the current version."""
        now = time.time()
        with self.database.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO adapters (name, current_version, created_at, updated_at) "
                    "VALUES (:n, NULL, :t, :t) ON CONFLICT (name) DO NOTHING"
                ),
                {"n": name, "t": now},
            )
            # Take the adapter's row lock (PostgreSQL) before numbering the version.
            conn.execute(
                sa.text("UPDATE adapters SET updated_at = :t WHERE name = :n"),
                {"n": name, "t": now},
            )
            current = self._load(conn, name)
            head = current.current if current else None
            if head and head.sha256 == facts.sha256 and head.base_model == base_model:
                return head
            number = 1 + max((v.version for v in current.versions), default=0) if current else 1
            conn.execute(
                sa.text(
                    "INSERT INTO adapter_versions (name, version, source, path, sha256, "
                    "base_model, rank, alpha, target_modules, size_bytes, manifest, state, "
                    "created_at) VALUES (:name, :version, :source, :path, :sha256, "
                    ":base_model, :rank, :alpha, :targets, :size, :manifest, :state, :t)"
                ),
                {
                    "name": name,
                    "version": number,
                    "source": source,
                    "path": path,
                    "sha256": facts.sha256,
                    "base_model": base_model,
                    "rank": facts.rank,
                    "alpha": facts.alpha,
                    "targets": json.dumps(list(facts.target_modules)),
                    "size": facts.size_bytes,
                    "manifest": json.dumps(manifest) if manifest is not None else None,
                    "state": REGISTERED,
                    "t": now,
                },
            )
            self._set_alias(conn, name, number)
            record = self._load(conn, name)
            assert record is not None
            version = record.version(number)
            assert version is not None
            return version

    def rollback(self, name: str, version: int | None = None) -> Adapter:
        """Point the alias at `version`, or at the newest registered version before the
        current one."""
        with self.database.begin() as conn:
            adapter = self._require(conn, name)
            live = [v.version for v in adapter.versions if v.state == REGISTERED]
            if version is None:
                older = [v for v in live if adapter.current_version and v < adapter.current_version]
                if not older:
                    raise RegistryConflictError(
                        f"adapter {name!r} has no earlier version to roll back to"
                    )
                version = max(older)
            elif version not in live:
                raise AdapterNotFoundError(f"adapter {name!r} has no registered version {version}")
            self._set_alias(conn, name, version)
            result = self._load(conn, name)
            assert result is not None
            return result

    def remove(self, name: str, version: int | None = None) -> Adapter:
        """Remove one version, or every version (the name then resolves to nothing). Removing
        the alias's version moves the alias to the newest remaining version."""
        with self.database.begin() as conn:
            adapter = self._require(conn, name)
            targets = [
                v.version
                for v in adapter.versions
                if v.state == REGISTERED and (version is None or v.version == version)
            ]
            if not targets:
                raise AdapterNotFoundError(f"adapter {name}@{version} is not registered")
            for number in targets:
                conn.execute(
                    sa.text(
                        "UPDATE adapter_versions SET state = :s WHERE name = :n AND version = :v"
                    ),
                    {"s": REMOVED, "n": name, "v": number},
                )
            if adapter.current_version in targets:
                remaining = [
                    v.version
                    for v in adapter.versions
                    if v.state == REGISTERED and v.version not in targets
                ]
                self._set_alias(conn, name, max(remaining) if remaining else None)
            else:
                self._bump(conn)
            result = self._load(conn, name)
            assert result is not None
            return result

    # --- reads -------------------------------------------------------------------------------
    def get(self, name: str) -> Adapter:
        with self.database.read() as conn:
            return self._require(conn, name)

    def list(self) -> list[Adapter]:
        return list(self.snapshot().adapters.values())

    def generation(self) -> int:
        with self.database.read() as conn:
            value = conn.execute(sa.text("SELECT generation FROM registry_state WHERE id = 1"))
            return int(value.scalar_one())

    def snapshot(self) -> Snapshot:
        with self.database.begin() as conn:
            generation = conn.execute(
                sa.text("SELECT generation FROM registry_state WHERE id = 1")
            ).scalar_one()
            heads = conn.execute(sa.text("SELECT name, current_version FROM adapters")).all()
            rows = conn.execute(
                sa.text("SELECT * FROM adapter_versions ORDER BY name, version")
            ).mappings()
            versions: dict[str, list[AdapterVersion]] = {}
            for row in rows:
                versions.setdefault(row["name"], []).append(_version(row))
        adapters = {
            name: Adapter(name, current, tuple(versions.get(name, ()))) for name, current in heads
        }
        return Snapshot(int(generation), dict(sorted(adapters.items())))

    # --- internals ---------------------------------------------------------------------------
    def _require(self, conn: Connection, name: str) -> Adapter:
        adapter = self._load(conn, name)
        if adapter is None or not adapter.versions:
            raise AdapterNotFoundError(f"adapter {name!r} is not registered")
        return adapter

    def _load(self, conn: Connection, name: str) -> Adapter | None:
        head = conn.execute(
            sa.text("SELECT current_version FROM adapters WHERE name = :n"), {"n": name}
        ).first()
        if head is None:
            return None
        rows = conn.execute(
            sa.text("SELECT * FROM adapter_versions WHERE name = :n ORDER BY version"), {"n": name}
        ).mappings()
        return Adapter(name, head[0], tuple(_version(row) for row in rows))

    def _set_alias(self, conn: Connection, name: str, version: int | None) -> None:
        conn.execute(
            sa.text("UPDATE adapters SET current_version = :v, updated_at = :t WHERE name = :n"),
            {"v": version, "t": time.time(), "n": name},
        )
        self._bump(conn)

    @staticmethod
    def _bump(conn: Connection) -> None:
        """Mark a change every gateway replica should pick up (see `generation`)."""
        conn.execute(sa.text("UPDATE registry_state SET generation = generation + 1 WHERE id = 1"))


def _version(row: Any) -> AdapterVersion:
    return AdapterVersion(
        name=row["name"],
        version=int(row["version"]),
        source=row["source"],
        path=row["path"],
        sha256=row["sha256"],
        base_model=row["base_model"],
        rank=int(row["rank"]),
        alpha=float(row["alpha"]),
        target_modules=tuple(json.loads(row["target_modules"])),
        size_bytes=int(row["size_bytes"]),
        state=row["state"],
        created_at=float(row["created_at"]),
        manifest=json.loads(row["manifest"]) if row["manifest"] else None,
    )
