"""`Target`: the base guard's special cases, decided in one place."""

from __future__ import annotations

from lorafleet.adapters.registry import AdapterVersion
from lorafleet.server.engine.pool import EnginePool
from lorafleet.server.request_target import Target

POOL = EnginePool("base", [])
ANSWER = b'{"id":"x","model":"base@0","choices":[]}'


def version(name: str, number: int) -> AdapterVersion:
    return AdapterVersion(
        name=name, version=number, source="s", path="/p", sha256="0" * 64, base_model="base",
        rank=1, alpha=1.0, target_modules=("q_proj",), size_bytes=0, state="registered",
        created_at=0.0,
    )  # fmt: skip


def test_a_plain_base_model() -> None:
    target = Target.base("base", POOL, None)
    assert (target.engine_model, target.adapter, target.log_adapter) == ("base", None, None)
    assert not target.counts_affinity
    assert target.renamer()(ANSWER) == ANSWER


def test_a_guarded_base_model_looks_like_the_base_model() -> None:
    target = Target.base("base", POOL, version("base", 0))
    assert target.engine_model == "base@0"  # the engine serves it through the guard...
    assert target.log_adapter is None  # ...but logs, metrics and answers name the base model
    assert not target.counts_affinity
    assert target.renamer()(ANSWER) == ANSWER.replace(b"base@0", b"base")


def test_an_adapter() -> None:
    target = Target.lora(version("support", 2), POOL)
    assert (target.label, target.engine_model, target.log_adapter) == (
        "support", "support@2", "support@2",
    )  # fmt: skip
    assert target.counts_affinity
    answer = ANSWER.replace(b"base@0", b"support@2")
    assert target.renamer()(answer) == answer
