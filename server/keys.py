"""API keys, tenants and their grants: stored hashed, checked in constant time, cached in memory.

    api_keys       key id -> HMAC of the key, tenant, rpm, tpm, budget, created/revoked at
    tenant_grants  (tenant, adapter name): the adapters every key of the tenant may use
    key_state      one row: `generation`, bumped by every write here, so each gateway replica
                   notices a new key, a revocation or a grant change with one cheap query

These tables are this module's alone (it declares their migrations; `lorafleet.db` runs them).
A key looks like `lf_<key id>_<secret>`. Only `HMAC-SHA256(key_secret, key)` is stored; the key
is shown once, at creation. A request's key is found by its id in an in-memory snapshot
(reloaded when the generation moves) and its HMAC compared with `hmac.compare_digest`. Auth is
on whenever an admin key is configured: tenant keys reach the inference routes and only the
adapters granted to their tenant (others look like 404); the admin routes need the admin key.

Grants belong to the tenant, not to a key (docs/design/tenancy.md): every key of a tenant
reaches the same adapters, a grant or its revocation applies to all of them at once, and
creating a key never changes what the tenant's existing keys reach.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lorafleet.db import Database, Migration
from lorafleet.server.errors import ConflictError

log = logging.getLogger(__name__)

_PREFIX = "lf_"
_TENANT_LOCK = 7002  # pg_advisory_xact_lock namespace for per-tenant grant decisions

# This module's tables (lorafleet.db runs the migrations; numbers are unique across stores).
MIGRATIONS = (
    Migration(
        2,
        __name__,
        (
            """CREATE TABLE api_keys (
                key_id TEXT PRIMARY KEY,
                key_hash TEXT NOT NULL,
                tenant TEXT NOT NULL,
                rpm INTEGER,
                tpm INTEGER,
                budget_tokens BIGINT,
                created_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION
            )""",
            """CREATE TABLE tenant_grants (
                tenant TEXT NOT NULL,
                adapter TEXT NOT NULL,
                PRIMARY KEY (tenant, adapter)
            )""",
        ),
    ),
    # Key and grant writes used to bump the adapter registry's generation; they have their own.
    Migration(
        4,
        __name__,
        (
            "CREATE TABLE key_state (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL)",
            "INSERT INTO key_state (id, generation) VALUES (1, 0)",
        ),
    ),
)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    key_hash: str
    tenant: str
    rpm: int | None
    tpm: int | None
    budget_tokens: int | None
    created_at: float
    revoked_at: float | None

    def to_json(self, grants: frozenset[str]) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "adapters": sorted(grants),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget_tokens": self.budget_tokens,
            "created_at": self.created_at,
            "revoked": self.revoked_at is not None,
        }


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, or a tenant with its granted adapters."""

    tenant: str
    admin: bool = False
    grants: frozenset[str] = frozenset()
    key: ApiKey | None = None

    def may_use(self, adapter: str) -> bool:
        return self.admin or adapter in self.grants


ADMIN = Principal(tenant="admin", admin=True)


@dataclass
class KeySnapshot:
    keys: dict[str, ApiKey] = field(default_factory=dict)
    grants: dict[str, frozenset[str]] = field(default_factory=dict)
    generation: int = -1  # the `key_state` generation it was read at


class KeyStore:
    """The keys and grants tables' only writer, and the in-memory snapshot requests read."""

    def __init__(self, database: Database, secret: str) -> None:
        self.database = database
        self._secret = secret.encode()
        self.snapshot = KeySnapshot()
        self._failed_refreshes = 0

    def hash(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    # --- writes (each one transaction that bumps `key_state.generation`) ---------------------
    def create(
        self,
        tenant: str,
        adapters: list[str],
        rpm: int | None = None,
        tpm: int | None = None,
        budget_tokens: int | None = None,
    ) -> tuple[str, ApiKey, frozenset[str]]:
        """A new key for `tenant`; returns the key (shown once), its record and the tenant's
        grants. `adapters` may grant only a tenant's first key anything new: once the tenant has
        an active key, naming an adapter it lacks is a 409 (`grant` says it out loud)."""
        key_id = secrets.token_hex(6)
        key = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        record = ApiKey(key_id, self.hash(key), tenant, rpm, tpm, budget_tokens, time.time(), None)
        with self.database.begin() as conn:
            _lock_tenant(conn, tenant)
            granted = _grants_of(conn, tenant)
            missing = sorted(set(adapters) - granted)
            if missing and _has_active_key(conn, tenant):
                raise ConflictError(
                    f"tenant {tenant!r} is not granted {', '.join(missing)}, and creating a key "
                    "never widens what the tenant's other keys reach: grant it first "
                    f"(POST /v1/keys/tenants/{tenant}/grants, or `lorafleet keys grant`)",
                    param="adapters",
                    code="grant_required",
                )
            conn.execute(
                sa.text(
                    "INSERT INTO api_keys (key_id, key_hash, tenant, rpm, tpm, budget_tokens, "
                    "created_at, revoked_at) VALUES (:key_id, :key_hash, :tenant, :rpm, :tpm, "
                    ":budget_tokens, :created_at, :revoked_at)"
                ),
                record.__dict__,
            )
            _insert_grants(conn, tenant, missing)
            _bump(conn)
        return key, record, granted | set(missing)

    def revoke(self, key_id: str) -> bool:
        with self.database.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE api_keys SET revoked_at = :t WHERE key_id = :k AND revoked_at IS NULL"
                ),
                {"t": time.time(), "k": key_id},
            )
            if result.rowcount:
                _bump(conn)
        return bool(result.rowcount)

    def grant(self, tenant: str, adapters: list[str]) -> frozenset[str]:
        """Grant `adapters` to every key of `tenant`, present and future; returns its grants."""
        with self.database.begin() as conn:
            _lock_tenant(conn, tenant)
            granted = _grants_of(conn, tenant)
            new = sorted(set(adapters) - granted)
            if new:
                _insert_grants(conn, tenant, new)
                _bump(conn)
        return granted | set(new)

    def revoke_grant(self, tenant: str, adapter: str) -> bool:
        """Take `adapter` away from `tenant`; False when it was not granted."""
        with self.database.begin() as conn:
            result = conn.execute(
                sa.text("DELETE FROM tenant_grants WHERE tenant = :t AND adapter = :a"),
                {"t": tenant, "a": adapter},
            )
            if result.rowcount:
                _bump(conn)
        return bool(result.rowcount)

    # --- reads -------------------------------------------------------------------------------
    def generation(self) -> int:
        with self.database.read() as conn:
            value = conn.execute(sa.text("SELECT generation FROM key_state WHERE id = 1"))
            return int(value.scalar_one())

    def load(self) -> KeySnapshot:
        with self.database.read() as conn:  # read first: a row newer than it reloads again
            generation = conn.execute(
                sa.text("SELECT generation FROM key_state WHERE id = 1")
            ).scalar_one()
            rows = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().all()
            grant_rows = conn.execute(sa.text("SELECT tenant, adapter FROM tenant_grants")).all()
        grants: dict[str, set[str]] = {}
        for tenant, adapter in grant_rows:
            grants.setdefault(tenant, set()).add(adapter)
        keys = {row["key_id"]: ApiKey(**dict(row)) for row in rows}
        return KeySnapshot(keys, {t: frozenset(a) for t, a in grants.items()}, int(generation))

    async def refresh(self) -> bool:
        """Reload keys and grants if they changed; True when it did. Called every
        `registry_poll_s` by each replica and after each write here. A database error is logged
        (once per outage) and keeps the last good snapshot; the next call tries again, since the
        snapshot's generation is still the old one. A slower, older read never replaces a newer
        one."""
        try:
            if await asyncio.to_thread(self.generation) == self.snapshot.generation:
                snapshot = None
            else:
                snapshot = await asyncio.to_thread(self.load)
        except sa.exc.SQLAlchemyError as exc:
            self._failed_refreshes += 1
            if self._failed_refreshes == 1:
                log.warning(
                    "key refresh failed, authenticating from the last good snapshot "
                    "(generation %d) and retrying every poll: %s",
                    self.snapshot.generation,
                    exc,
                )
            return False
        if self._failed_refreshes:
            log.info("key refresh works again after %d failed tries", self._failed_refreshes)
            self._failed_refreshes = 0
        if snapshot is None or snapshot.generation < self.snapshot.generation:
            return False
        self.snapshot = snapshot
        return True

    def authenticate(self, key: str) -> Principal | None:
        """The tenant behind `key`, or None for an unknown, malformed or revoked key."""
        if not key.startswith(_PREFIX) or key.count("_") < 2:
            return None
        key_id = key[len(_PREFIX) :].split("_", 1)[0]
        record = self.snapshot.keys.get(key_id)
        expected = record.key_hash if record else "0" * 64
        matches = hmac.compare_digest(self.hash(key), expected)  # constant time either way
        if record is None or not matches or record.revoked_at is not None:
            return None
        return Principal(record.tenant, grants=self.grants_of(record.tenant), key=record)

    def grants_of(self, tenant: str) -> frozenset[str]:
        return self.snapshot.grants.get(tenant, frozenset())

    def list_json(self) -> list[dict[str, Any]]:
        return [
            key.to_json(self.grants_of(key.tenant))
            for key in sorted(self.snapshot.keys.values(), key=lambda k: k.created_at)
        ]


def _lock_tenant(conn: Connection, tenant: str) -> None:
    """Serialize grant decisions per tenant (PostgreSQL; SQLite's writes are serial anyway),
    so two concurrent first keys cannot both count as the first."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:t))"),
            {"ns": _TENANT_LOCK, "t": tenant},
        )


def _grants_of(conn: Connection, tenant: str) -> frozenset[str]:
    rows = conn.execute(
        sa.text("SELECT adapter FROM tenant_grants WHERE tenant = :t"), {"t": tenant}
    ).scalars()
    return frozenset(rows)


def _has_active_key(conn: Connection, tenant: str) -> bool:
    row = conn.execute(
        sa.text("SELECT 1 FROM api_keys WHERE tenant = :t AND revoked_at IS NULL LIMIT 1"),
        {"t": tenant},
    ).first()
    return row is not None


def _insert_grants(conn: Connection, tenant: str, adapters: list[str]) -> None:
    for adapter in adapters:
        conn.execute(
            sa.text(
                "INSERT INTO tenant_grants (tenant, adapter) VALUES (:t, :a) "
                "ON CONFLICT (tenant, adapter) DO NOTHING"
            ),
            {"t": tenant, "a": adapter},
        )


def _bump(conn: Connection) -> None:
    """Mark a change every gateway replica picks up at its next poll (see `generation`)."""
    conn.execute(sa.text("UPDATE key_state SET generation = generation + 1 WHERE id = 1"))


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
