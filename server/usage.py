"""Metering: requests and tokens per day, tenant, key and model, persisted.

Counts are added up in memory as answers finish and flushed to the `usage` table every few
seconds (and at shutdown) with an additive upsert, so several gateway replicas can write the
same rows. The `usage` table is this module's alone (it declares its migration; `lorafleet.db`
runs it). Token counts are the engine's own `usage` numbers, i.e. what clients were billed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from lorafleet.db import Database, Migration
from lorafleet.server.loops import survive

log = logging.getLogger(__name__)

# This module's table (lorafleet.db runs the migrations; numbers are unique across stores).
MIGRATIONS = (
    Migration(
        3,
        __name__,
        (
            """CREATE TABLE usage (
                day TEXT NOT NULL,
                tenant TEXT NOT NULL,
                key_id TEXT NOT NULL,
                model TEXT NOT NULL,
                requests BIGINT NOT NULL,
                prompt_tokens BIGINT NOT NULL,
                completion_tokens BIGINT NOT NULL,
                PRIMARY KEY (day, tenant, key_id, model)
            )""",
        ),
    ),
)

UsageKey = tuple[str, str, str, str]  # day, tenant, key id, model
GROUPS = ("day", "tenant", "key_id", "model")


class UsageMeter:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._pending: defaultdict[UsageKey, list[int]] = defaultdict(lambda: [0, 0, 0])

    def record(self, tenant: str, key_id: str, model: str, prompt: int, completion: int) -> None:
        row = self._pending[(time.strftime("%Y-%m-%d", time.gmtime()), tenant, key_id, model)]
        row[0] += 1
        row[1] += prompt
        row[2] += completion

    def flush(self) -> int:
        """Write pending counts; on failure they stay pending for the next flush."""
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0])
        if not pending:
            return 0
        try:
            with self.database.begin() as conn:
                for (day, tenant, key_id, model), (requests, prompt, completion) in pending.items():
                    conn.execute(
                        sa.text(
                            "INSERT INTO usage VALUES (:day, :tenant, :key, :model, :r, :p, :c) "
                            "ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET "
                            "requests = usage.requests + excluded.requests, "
                            "prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens, "
                            "completion_tokens = "
                            "usage.completion_tokens + excluded.completion_tokens"
                        ),
                        {"day": day, "tenant": tenant, "key": key_id, "model": model,
                         "r": requests, "p": prompt, "c": completion},
                    )  # fmt: skip
        except sa.exc.SQLAlchemyError as exc:
            for key, row in pending.items():  # keep them for the next try
                merged = self._pending[key]
                for i in range(3):
                    merged[i] += row[i]
            log.warning("usage flush failed, will retry: %s", exc)
            return 0
        return len(pending)

    async def run(self, interval_s: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval_s)
                await survive("usage flush", lambda: asyncio.to_thread(self.flush))
        finally:
            await asyncio.to_thread(self.flush)

    def spent_by_key(self) -> dict[str, int]:
        with self.database.read() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT key_id, SUM(prompt_tokens + completion_tokens) FROM usage "
                    "GROUP BY key_id"
                )
            ).all()
        return {key_id: int(total or 0) for key_id, total in rows}

    def report(self, group_by: list[str], since: str | None = None) -> list[dict[str, Any]]:
        columns = [g for g in group_by if g in GROUPS] or ["day"]
        select = ", ".join(columns)
        where = "WHERE day >= :since" if since else ""
        with self.database.read() as conn:
            rows = conn.execute(
                sa.text(
                    f"SELECT {select}, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) "
                    f"FROM usage {where} GROUP BY {select} ORDER BY {select}"
                ),
                {"since": since},
            ).all()
        return [
            {
                **dict(zip(columns, row[: len(columns)], strict=True)),
                "requests": int(row[-3]),
                "prompt_tokens": int(row[-2]),
                "completion_tokens": int(row[-1]),
            }
            for row in rows
        ]
