"""Putting registered adapters onto engines: resolve, load once, track, drain, reconcile.

The registry (a database) holds the desired state: which versions exist and where each alias
points. This module holds the actual state per engine replica, as explicit states

    (absent) -> LOADING -> READY | FAILED        DRAINING -> (unloaded)

and keeps the two in line:
- `resolve(model)` maps `name` (the alias) or `name@version` (pinned) to a version, from a cached
  registry snapshot that is refreshed whenever the registry's generation counter moves (so
  gateway replicas sharing PostgreSQL see each other's alias changes within a poll interval);
- `ensure_loaded(version, replica)` loads a version under its own engine name (`name@version`)
  with single flight: a hundred concurrent first requests cause one load;
- `track(...)` counts requests in flight per loaded version; a version the alias has moved away
  from is unloaded once its last request finished (DRAINING);
- a per-replica budget evicts the least recently used idle adapter;
- `reconcile(replica)` compares with the engine's `/v1/models` and reloads what an engine forgot
  (it restarted) and drops what it no longer has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as CounterOf
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from lorafleet.adapters.registry import REGISTERED, AdapterRegistry, AdapterVersion, Snapshot
from lorafleet.server.engine.pool import Replica
from lorafleet.server.errors import (
    AdapterNotSupportedError,
    EngineError,
    EngineTimeoutError,
    LorafleetError,
)
from lorafleet.server.metrics import GatewayMetrics

log = logging.getLogger(__name__)
GUARD_SOURCE = "lorafleet:base-guard"


class LoadState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


@dataclass
class Placement:
    """One adapter version on one replica."""

    version: AdapterVersion
    state: LoadState
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    error: str | None = None
    # The engine kind serves no adapters (llama.cpp): the client gets that 400, not a 502.
    refusal: AdapterNotSupportedError | None = None
    task: asyncio.Task[None] | None = None


class AdapterMetrics:
    """Per-adapter load metrics, labelled through the gateway's bounded `ModelLabels`: at most
    `metrics_max_adapter_labels` adapter names, the rest as `adapter="_other-adapters"`.

    `lorafleet:adapter_ready{adapter, engine}` keeps its per-replica view but is a count (the
    adapter's versions loaded on that engine: 0 or 1, 2 while an alias moves and the old
    version drains), not a 0/1 flag: a flag cannot be shared by the many adapters behind the
    overflow label (one adapter's unload would zero another's load), a count can, and it stays
    right when one version replaces another. Its series are bounded by (labels + 1) x replicas
    of a cheap gauge, and `sum by (engine)` gives the adapters loaded per replica. Which
    adapter is where, exactly, is in `GET /v1/adapters/{name}` (`engines`).
    """

    def __init__(self, metrics: GatewayMetrics) -> None:
        registry = metrics.registry
        self.label = metrics.model_label
        self.loads = Counter(
            "lorafleet:adapter_loads",
            "Adapter loads onto engines, by outcome (ok, failed).",
            ["adapter", "outcome"],
            registry=registry,
        )
        self.load_seconds = Histogram(
            "lorafleet:adapter_load_seconds",
            "Time to load an adapter version onto an engine.",
            ["adapter"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.ready = Gauge(
            "lorafleet:adapter_ready",
            "Versions of the adapter loaded and ready on the engine (0 or 1; 2 while an alias "
            'moves). Adapters past the label limit add up under adapter="_other-adapters".',
            ["adapter", "engine"],
            registry=registry,
        )
        self.unloads = Counter(
            "lorafleet:adapter_unloads",
            "Adapter versions unloaded from engines, by reason (drained, evicted, removed).",
            ["adapter", "reason"],
            registry=registry,
        )

    def loaded(self, name: str, engine: str, seconds: float) -> None:
        label = self.label(name)
        self.loads.labels(label, "ok").inc()
        self.load_seconds.labels(label).observe(seconds)
        self.ready.labels(label, engine).inc()

    def load_failed(self, name: str) -> None:
        self.loads.labels(self.label(name), "failed").inc()

    def adopted(self, name: str, engine: str) -> None:
        """Found loaded on the engine without a load of ours (another gateway loaded it)."""
        self.ready.labels(self.label(name), engine).inc()

    def gone(self, placement: Placement, engine: str, reason: str | None = None) -> None:
        """A placement left the replica: unloaded for `reason`, or forgotten by the engine."""
        label = self.label(placement.version.name)
        if placement.state in (LoadState.READY, LoadState.DRAINING):  # counted as loaded
            self.ready.labels(label, engine).dec()
        if reason is not None:
            self.unloads.labels(label, reason).inc()


class AdapterManager:
    def __init__(
        self,
        registry: AdapterRegistry,
        metrics: GatewayMetrics,
        *,
        load_timeout_s: float,
        max_per_replica: int,
    ) -> None:
        self.registry = registry
        self.metrics = AdapterMetrics(metrics)
        self.load_timeout_s = load_timeout_s
        self.max_per_replica = max_per_replica
        self.snapshot = Snapshot(generation=-1, adapters={})
        # Base model id -> its base guard (see lorafleet.adapters.guard), for pools that need one.
        self.guards: dict[str, AdapterVersion] = {}
        self._placements: dict[str, OrderedDict[str, Placement]] = {}  # replica url -> name@v
        # Requests that resolved a version and have not ended, by engine name: from resolve on
        # (before any replica is chosen, while a stream waits for its first byte) the version
        # must stay loaded wherever it is.
        self._pinned: CounterOf[str] = CounterOf()

    # --- desired state -----------------------------------------------------------------------
    async def refresh(self, force: bool = False) -> bool:
        """Reload the registry snapshot if it changed; True when it did. A database outage
        keeps the last snapshot: already-resolved models keep working."""
        try:
            if not force and await asyncio.to_thread(self.registry.generation) == (
                self.snapshot.generation
            ):
                return False
            snapshot = await asyncio.to_thread(self.registry.snapshot)
        except Exception as exc:  # the database is briefly unreachable: serve from the cache
            log.warning("registry refresh failed, serving from cache: %s", exc)
            return False
        if snapshot.generation < self.snapshot.generation:
            return False  # a slower, older read lost the race to a newer one
        self.snapshot = snapshot
        return True

    def lookup(self, model: str) -> AdapterVersion | None:
        """`name` -> the alias's version; `name@N` -> version N. Removed versions resolve to
        nothing."""
        name, _, pinned = model.partition("@")
        adapter = self.snapshot.adapters.get(name)
        if adapter is None:
            return None
        if pinned:
            if not _is_version(pinned):
                return None
            version = adapter.version(int(pinned))
        else:
            version = adapter.current
        return version if version is not None and version.state == REGISTERED else None

    def set_guard(self, base_model_id: str, path: Path) -> None:
        """Route base requests through the all-zero adapter at `path` (engine name
        `<base>@0`: no client can ask for it, registry names never equal a base id)."""
        self.guards[base_model_id] = AdapterVersion(
            name=base_model_id, version=0, source=GUARD_SOURCE, path=str(path),
            sha256="0" * 64, base_model=base_model_id, rank=1, alpha=1.0,
            target_modules=("q_proj",), size_bytes=0, state=REGISTERED, created_at=time.time(),
        )  # fmt: skip

    def guard_for(self, base_model_id: str) -> AdapterVersion | None:
        return self.guards.get(base_model_id)

    @staticmethod
    def is_guard(version: AdapterVersion) -> bool:
        return version.source == GUARD_SOURCE

    def servable(self) -> list[AdapterVersion]:
        """The alias targets: what `/v1/models` lists."""
        return [a.current for a in self.snapshot.adapters.values() if a.current is not None]

    # --- actual state ------------------------------------------------------------------------
    def placements(self, replica: Replica) -> OrderedDict[str, Placement]:
        return self._placements.setdefault(replica.url, OrderedDict())

    def holds(self, replica: Replica, version: AdapterVersion) -> bool:
        placement = self.placements(replica).get(version.engine_name)
        return placement is not None and placement.state == LoadState.READY

    async def ensure_loaded(self, version: AdapterVersion, replica: Replica) -> None:
        placements = self.placements(replica)
        placement = placements.get(version.engine_name)
        if placement is not None and placement.state in (LoadState.READY, LoadState.DRAINING):
            placement.state = LoadState.READY
            placements.move_to_end(version.engine_name)
            return
        if placement is None or placement.state == LoadState.FAILED:
            await self._make_room(replica)
            placement = Placement(version, LoadState.LOADING)
            placements[version.engine_name] = placement
            placement.task = asyncio.create_task(self._load(placement, replica))
        assert placement.task is not None
        try:
            # shield: a cancelled client must not cancel the load other requests wait for
            await asyncio.wait_for(asyncio.shield(placement.task), self.load_timeout_s)
        except TimeoutError as exc:
            raise EngineTimeoutError(
                f"adapter {version.engine_name} did not load within {self.load_timeout_s:.0f}s"
            ) from exc
        if placement.state != LoadState.READY:
            if placement.refusal is not None:
                raise placement.refusal
            raise EngineError(
                f"adapter {version.engine_name} failed to load: {placement.error}",
                code="adapter_load_failed",
            )

    async def _load(self, placement: Placement, replica: Replica) -> None:
        version = placement.version
        started = time.perf_counter()
        try:
            await replica.engine.load_adapter(version.engine_name, version.path)
        except LorafleetError as exc:
            placement.state, placement.error = LoadState.FAILED, exc.message
            placement.refusal = exc if isinstance(exc, AdapterNotSupportedError) else None
            self.metrics.load_failed(version.name)
            log.warning("loading %s on %s failed: %s", version.engine_name, replica.url, exc)
            return
        placement.state = LoadState.READY
        elapsed = time.perf_counter() - started
        self.metrics.loaded(version.name, replica.url, elapsed)
        log.info("loaded %s on %s in %.2fs", version.engine_name, replica.url, elapsed)

    def pin(self, version: AdapterVersion) -> Callable[[], None]:
        """Keep `version` from eviction and unloading until the returned release is called
        (once; later calls do nothing)."""
        name = version.engine_name
        self._pinned[name] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._pinned[name] -= 1
                if self._pinned[name] <= 0:
                    del self._pinned[name]

        return release

    def _busy(self, engine_name: str, placement: Placement) -> bool:
        return placement.in_flight > 0 or engine_name in self._pinned

    @contextmanager
    def track(self, version: AdapterVersion, replica: Replica) -> Iterator[None]:
        placement = self.placements(replica).get(version.engine_name)
        if placement is None:  # unloaded between ensure_loaded and now: nothing to count
            yield
            return
        placement.in_flight += 1
        placement.last_used = time.monotonic()
        try:
            yield
        finally:
            placement.in_flight -= 1

    async def _make_room(self, replica: Replica) -> None:
        placements = self.placements(replica)
        while len(placements) >= self.max_per_replica:
            idle = [
                name
                for name, p in placements.items()
                if not self._busy(name, p)
                and p.state != LoadState.LOADING
                and not self.is_guard(p.version)
            ]
            if not idle:
                return  # every adapter is busy: go over budget rather than fail requests
            await self._unload(replica, idle[0], "evicted")  # OrderedDict: least recent first

    async def _unload(self, replica: Replica, engine_name: str, reason: str) -> None:
        placement = self.placements(replica).pop(engine_name, None)
        if placement is None:
            return
        self.metrics.gone(placement, replica.url, reason)
        try:
            await replica.engine.unload_adapter(engine_name)
        except LorafleetError as exc:  # the next reconcile retries
            log.warning("unloading %s from %s failed: %s", engine_name, replica.url, exc)

    # --- reconcile ---------------------------------------------------------------------------
    async def reconcile(self, replica: Replica) -> None:
        """Bring one replica in line with the registry and with what the engine really holds."""
        await self._retire_unwanted(replica)
        if not replica.healthy:
            return
        try:
            cards = await replica.engine.list_models()
        except LorafleetError:
            return
        on_engine = {card["id"] for card in cards if card.get("parent")}
        await self._reload_forgotten(replica, on_engine)
        await self._ensure_guard(replica)
        await self._adopt_or_unload_strays(replica, on_engine)

    async def _retire_unwanted(self, replica: Replica) -> None:
        """Versions removed, or no longer the alias target: drain, then unload once idle."""
        placements = self.placements(replica)
        for engine_name, placement in list(placements.items()):
            if self.is_guard(placement.version):
                continue  # the base guard stays as long as the engine does
            wanted = self.lookup(engine_name)
            current = self.lookup(placement.version.name)
            if wanted is not None and (current is None or current.engine_name == engine_name):
                continue
            if not self._busy(engine_name, placement) and placement.state != LoadState.LOADING:
                reason = "removed" if wanted is None else "drained"
                await self._unload(replica, engine_name, reason)
            elif placement.state == LoadState.READY:
                placement.state = LoadState.DRAINING

    async def _reload_forgotten(self, replica: Replica, on_engine: set[str]) -> None:
        """The engine restarted and forgot adapters: load them again now, not on the next
        request."""
        placements = self.placements(replica)
        for engine_name, placement in list(placements.items()):
            if placement.state != LoadState.READY or engine_name in on_engine:
                continue
            log.info("engine %s forgot %s; reloading", replica.url, engine_name)
            placements.pop(engine_name)
            self.metrics.gone(placement, replica.url)
            try:
                await self.ensure_loaded(placement.version, replica)
            except LorafleetError as exc:
                log.warning("reloading %s failed: %s", engine_name, exc)

    async def _ensure_guard(self, replica: Replica) -> None:
        """Load the replica's base guard before an adapter request can share a batch with
        the base model."""
        guard = self.guards.get(replica.base_model)
        if guard is None or guard.engine_name in self.placements(replica):
            return
        try:
            await self.ensure_loaded(guard, replica)
        except LorafleetError as exc:
            log.warning("loading the base guard on %s failed: %s", replica.url, exc)

    async def _adopt_or_unload_strays(self, replica: Replica, on_engine: set[str]) -> None:
        """Adapters on the engine that this process did not load (another gateway replica
        did, or this one before a restart): adopt registered versions, unload removed ones."""
        placements = self.placements(replica)
        guard = self.guards.get(replica.base_model)
        for engine_name in on_engine - set(placements):
            if "@" not in engine_name or (guard and engine_name == guard.engine_name):
                continue
            version = self.lookup(engine_name)
            if version is not None:
                placements[engine_name] = Placement(version, LoadState.READY)
                self.metrics.adopted(version.name, replica.url)
            else:
                await replica.engine.unload_adapter(engine_name)

    def engine_states(self, version: AdapterVersion) -> dict[str, str]:
        return {
            url: placements[version.engine_name].state.value
            for url, placements in self._placements.items()
            if version.engine_name in placements
        }


def _is_version(text: str) -> bool:
    """ASCII digits only: `str.isdigit` also accepts "²", which `int` then refuses; and a
    version past 2**31 exists nowhere (and would overflow the registry's integer column)."""
    return text.isascii() and text.isdigit() and len(text) <= 9
