"""Where a request goes: the `model` a client sends, resolved to a pool and an engine name.

A base model served through its guard adapter (`lorafleet.adapters.guard`: vLLM on CPU mixes
base-model and LoRA rows of one batch wrongly, so base requests go through an all-zero adapter)
is special in four ways, all decided here by `Target.guard`: the engine knows it by the guard's
name, answers are renamed back to the base model, logs name no adapter, and routing metrics do
not count it as adapter affinity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lorafleet.adapters.registry import AdapterVersion
from lorafleet.server.engine.pool import EnginePool
from lorafleet.server.errors import ModelNotFoundError
from lorafleet.server.keys import ADMIN, Principal
from lorafleet.server.lora import AdapterManager
from lorafleet.server.protocol import ModelCard


@dataclass(frozen=True)
class Target:
    """`label` names the request in metrics and answers, `engine_model` is the engine's name for
    it, `adapter` the pinned adapter version (None for a plain base model)."""

    label: str
    engine_model: str
    pool: EnginePool
    adapter: AdapterVersion | None = None
    guard: bool = False  # a base model through its guard adapter (see the module docstring)

    @classmethod
    def base(cls, model: str, pool: EnginePool, guard: AdapterVersion | None) -> Target:
        if guard is None:
            return cls(label=model, engine_model=model, pool=pool)
        return cls(model, guard.engine_name, pool, guard, guard=True)

    @classmethod
    def lora(cls, version: AdapterVersion, pool: EnginePool) -> Target:
        return cls(version.name, version.engine_name, pool, version)

    @property
    def log_adapter(self) -> str | None:
        """The adapter version logs and traces name (none for a base model, guarded or not)."""
        return None if self.adapter is None or self.guard else self.adapter.engine_name

    @property
    def counts_affinity(self) -> bool:
        """Whether placing it counts in the warm/cold routing metric (real adapters only)."""
        return self.adapter is not None and not self.guard

    def renamer(self) -> Callable[[bytes], bytes]:
        """Rewrites `"model":"<guard name>"` in the engine's JSON to the base model the client
        asked for (no parse: a bytes replace); other targets pass through untouched."""
        if not self.guard:
            return _same
        old = b'"model":"' + self.engine_model.encode() + b'"'
        new = b'"model":"' + self.label.encode() + b'"'
        return lambda data: data.replace(old, new, 1)


class ModelResolver:
    """Maps the `model` a client sends to a target: a base model id, an adapter name (its
    alias) or `name@version`. Names are looked up, never used as paths."""

    def __init__(
        self, pools: dict[str, EnginePool], adapters: AdapterManager | None, created: int
    ) -> None:
        self._pools = pools
        self.adapters = adapters
        self._created = created

    async def resolve(self, model: str, who: Principal = ADMIN) -> Target:
        pool = self._pools.get(model)
        if pool is not None:
            guard = self.adapters.guard_for(model) if self.adapters else None
            return Target.base(model, pool, guard)
        version = self.adapters.lookup(model) if self.adapters else None
        if version is None or version.base_model not in self._pools:
            raise ModelNotFoundError(model)
        if not who.may_use(version.name):  # another tenant's adapter looks like no adapter
            raise ModelNotFoundError(model)
        return Target.lora(version, self._pools[version.base_model])

    async def list_models(self, who: Principal = ADMIN) -> list[ModelCard]:
        cards = [
            ModelCard(id=name, created=self._created, root=name, max_model_len=pool.max_model_len)
            for name, pool in sorted(self._pools.items())
        ]
        for version in self.adapters.servable() if self.adapters else []:
            if not who.may_use(version.name):
                continue
            cards.append(
                ModelCard(
                    id=version.name,
                    created=int(version.created_at),
                    root=version.engine_name,
                    parent=version.base_model,
                )
            )
        return cards


def _same(data: bytes) -> bytes:
    return data
