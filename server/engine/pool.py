"""A pool of engine replicas serving one base model: health, readiness and replica choice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lorafleet.server.engine.base import EngineClient
from lorafleet.server.errors import EngineUnavailableError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Replica:
    engine: EngineClient
    healthy: bool = False
    in_flight: int = 0

    @property
    def url(self) -> str:
        return self.engine.url


class EnginePool:
    """Replicas of one base model. `lease()` picks the healthy replica with the fewest requests
    in flight (least outstanding requests) and counts the request against it until released."""

    def __init__(self, base_model: str, engines: list[EngineClient]) -> None:
        self.base_model = base_model
        self.replicas = [Replica(engine) for engine in engines]

    @property
    def ready(self) -> bool:
        return any(replica.healthy for replica in self.replicas)

    @property
    def in_flight(self) -> int:
        return sum(replica.in_flight for replica in self.replicas)

    def pick(self) -> Replica:
        healthy = [replica for replica in self.replicas if replica.healthy]
        if not healthy:
            raise EngineUnavailableError(
                f"no engine for {self.base_model!r} is ready yet", retry_after_s=5
            )
        return min(healthy, key=lambda replica: replica.in_flight)

    @contextmanager
    def lease(self, replica: Replica) -> Iterator[Replica]:
        replica.in_flight += 1
        try:
            yield replica
        finally:
            replica.in_flight -= 1

    def mark_failed(self, replica: Replica) -> None:
        """A request could not reach the replica: stop routing to it until health says so."""
        if replica.healthy:
            log.warning("engine %s marked unhealthy", replica.url)
        replica.healthy = False

    async def check_health(self) -> None:
        results = await asyncio.gather(*(r.engine.health() for r in self.replicas))
        for replica, ok in zip(self.replicas, results, strict=True):
            if ok != replica.healthy:
                log.info("engine %s is %s", replica.url, "ready" if ok else "not ready")
            replica.healthy = ok

    async def watch_health(self, interval_s: float) -> None:
        """Poll health forever: every second until ready, then every `interval_s`."""
        while True:
            await self.check_health()
            await asyncio.sleep(interval_s if self.ready else min(1.0, interval_s))

    async def aclose(self) -> None:
        await asyncio.gather(*(replica.engine.aclose() for replica in self.replicas))
