"""API keys and tenants: stored hashed, checked in constant time, cached in memory.

A key looks like `lf_<key id>_<secret>`. Only `HMAC-SHA256(key_secret, key)` is stored; the key
is shown once, at creation. A request's key is found by its id in an in-memory snapshot
(refreshed with the registry's generation, like adapters) and its HMAC compared with
`hmac.compare_digest`. Auth is on whenever an admin key is configured: tenant keys reach the
inference routes and only the adapters granted to their tenant (others look like 404); the
admin routes need the admin key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from lorafleet.adapters.registry import AdapterRegistry

_PREFIX = "lf_"


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
    generation: int = -1  # the registry generation it was read at


class KeyStore:
    def __init__(self, registry: AdapterRegistry, secret: str) -> None:
        self._registry = registry
        self._secret = secret.encode()
        self.snapshot = KeySnapshot()

    def hash(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def create(
        self,
        tenant: str,
        adapters: list[str],
        rpm: int | None = None,
        tpm: int | None = None,
        budget_tokens: int | None = None,
    ) -> tuple[str, ApiKey]:
        key_id = secrets.token_hex(6)
        key = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        record = ApiKey(key_id, self.hash(key), tenant, rpm, tpm, budget_tokens, time.time(), None)
        with self._registry.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO api_keys VALUES (:key_id, :key_hash, :tenant, :rpm, :tpm, "
                    ":budget_tokens, :created_at, :revoked_at)"
                ),
                record.__dict__,
            )
            for adapter in adapters:
                conn.execute(
                    sa.text(
                        "INSERT INTO tenant_grants (tenant, adapter) VALUES (:t, :a) "
                        "ON CONFLICT (tenant, adapter) DO NOTHING"
                    ),
                    {"t": tenant, "a": adapter},
                )
            self._registry.bump(conn)
        return key, record

    def revoke(self, key_id: str) -> bool:
        with self._registry.engine.begin() as conn:
            result = conn.execute(
                sa.text(
                    "UPDATE api_keys SET revoked_at = :t WHERE key_id = :k AND revoked_at IS NULL"
                ),
                {"t": time.time(), "k": key_id},
            )
            self._registry.bump(conn)
        return bool(result.rowcount)

    async def refresh(self) -> None:
        """Reload the keys; a slower, older read never replaces a newer one."""
        snapshot = await asyncio.to_thread(self.load)
        if snapshot.generation >= self.snapshot.generation:
            self.snapshot = snapshot

    def load(self) -> KeySnapshot:
        with self._registry.engine.begin() as conn:
            generation = conn.execute(
                sa.text("SELECT generation FROM registry_state WHERE id = 1")
            ).scalar_one()
            rows = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().all()
            grant_rows = conn.execute(sa.text("SELECT tenant, adapter FROM tenant_grants")).all()
        grants: dict[str, set[str]] = {}
        for tenant, adapter in grant_rows:
            grants.setdefault(tenant, set()).add(adapter)
        keys = {row["key_id"]: ApiKey(**dict(row)) for row in rows}
        return KeySnapshot(keys, {t: frozenset(a) for t, a in grants.items()}, int(generation))

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
        grants = self.snapshot.grants.get(record.tenant, frozenset())
        return Principal(record.tenant, grants=grants, key=record)

    def list_json(self) -> list[dict[str, Any]]:
        return [
            key.to_json(self.snapshot.grants.get(key.tenant, frozenset()))
            for key in sorted(self.snapshot.keys.values(), key=lambda k: k.created_at)
        ]


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
