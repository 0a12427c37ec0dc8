"""A pool of engine replicas serving one base model: health, readiness and replica choice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from lorafleet.server.engine.base import EngineClient
from lorafleet.server.errors import EngineUnavailableError, LorafleetError
from lorafleet.server.loops import survive

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Replica:
    engine: EngineClient
    base_model: str = ""  # the pool's base model
    healthy: bool = False
    in_flight: int = 0
    sent: int = 0  # requests ever leased: breaks ties so idle replicas take turns

    @property
    def url(self) -> str:
        return self.engine.url


def _load(replica: Replica) -> tuple[int, int]:
    return replica.in_flight, replica.sent


class EnginePool:
    """Replicas of one base model. `lease()` picks the healthy replica with the fewest requests
    in flight (least outstanding requests) and counts the request against it until released."""

    def __init__(
        self, base_model: str, engines: list[EngineClient], affinity_slack: int = 8
    ) -> None:
        self.base_model = base_model
        self.replicas = [Replica(engine, base_model) for engine in engines]
        self.affinity_slack = affinity_slack
        self.max_model_len: int | None = None  # learnt from the engines' /v1/models

    @property
    def ready(self) -> bool:
        return any(replica.healthy for replica in self.replicas)

    @property
    def in_flight(self) -> int:
        return sum(replica.in_flight for replica in self.replicas)

    def pick(
        self, prefer: Callable[[Replica], bool] | None = None, avoid: set[str] | None = None
    ) -> Replica:
        """Least outstanding requests; with `prefer`, the preferred replicas (those holding
        an adapter) win unless they carry `affinity_slack` more requests than the least
        loaded replica (bounded load: a hot adapter spreads instead of piling up)."""
        healthy = [replica for replica in self.replicas if replica.healthy]
        if not healthy:
            raise EngineUnavailableError(
                f"no engine for {self.base_model!r} is ready yet", retry_after_s=5
            )
        fresh = [replica for replica in healthy if replica.url not in (avoid or ())]
        healthy = fresh or healthy  # after a failure, another replica if there is one
        least = min(healthy, key=_load)
        if prefer is not None:
            preferred = [r for r in healthy if prefer(r)]
            if preferred:
                best = min(preferred, key=_load)
                if best.in_flight <= least.in_flight + self.affinity_slack:
                    return best
        return least

    @contextmanager
    def lease(self, replica: Replica) -> Iterator[Replica]:
        replica.in_flight += 1
        replica.sent += 1
        try:
            yield replica
        finally:
            replica.in_flight -= 1

    def set_engines(self, engines: list[EngineClient]) -> list[EngineClient]:
        """Replace the replica set (service discovery): keep replicas whose URL stays, add the
        new ones (unhealthy until probed), drop the rest. Returns the dropped engines."""
        wanted = {engine.url: engine for engine in engines}
        kept = [replica for replica in self.replicas if replica.url in wanted]
        known = {replica.url for replica in kept}
        dropped = [r.engine for r in self.replicas if r.url not in wanted]
        self.replicas = kept + [
            Replica(e, self.base_model) for url, e in wanted.items() if url not in known
        ]
        return dropped

    def mark_failed(self, replica: Replica) -> None:
        """A request could not reach the replica: stop routing to it until health says so."""
        if replica.healthy:
            log.warning("engine %s marked unhealthy", replica.url)
        replica.healthy = False

    async def check_health(self) -> list[Replica]:
        """Probe every replica; returns those that just became healthy (to reconcile)."""
        results = await asyncio.gather(*(r.engine.health() for r in self.replicas))
        recovered = []
        for replica, ok in zip(self.replicas, results, strict=True):
            if ok != replica.healthy:
                log.info("engine %s is %s", replica.url, "ready" if ok else "not ready")
                if ok:
                    recovered.append(replica)
            replica.healthy = ok
        if recovered and self.max_model_len is None:
            await self._learn_limits(recovered[0])
        return recovered

    async def _learn_limits(self, replica: Replica) -> None:
        try:
            cards = await replica.engine.list_models()
        except LorafleetError:
            return
        for card in cards:
            if card.get("id") == self.base_model and card.get("max_model_len"):
                self.max_model_len = int(card["max_model_len"])

    async def watch_health(
        self,
        interval_s: float,
        on_recovered: Callable[[Replica], Awaitable[None]] | None = None,
    ) -> None:
        """Poll health forever: every second until ready, then every `interval_s`. A replica
        that comes (back) up is handed to `on_recovered` (adapter reconcile)."""

        async def check() -> None:
            for replica in await self.check_health():
                if on_recovered is not None:
                    await survive(f"recovery of {replica.url}", partial(on_recovered, replica))

        while True:
            await survive(f"health of {self.base_model}", check)
            await asyncio.sleep(interval_s if self.ready else min(1.0, interval_s))

    async def aclose(self) -> None:
        await asyncio.gather(*(replica.engine.aclose() for replica in self.replicas))
