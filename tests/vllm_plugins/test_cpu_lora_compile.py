"""The opaque LoRA ops give what vLLM's CPU punica wrapper gives (with the grouped ops), they
trace into one graph, and a graph traced once follows each later step's adapter indices: the
property that lets a LoRA engine keep vLLM's trace-once compilation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo
from vllm.lora.punica_wrapper import punica_cpu
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from lorafleet.vllm_plugins import cpu_lora_compile as opaque
from lorafleet.vllm_plugins import cpu_lora_ops as grouped

MAX_LORAS, RANK, HIDDEN = 4, 8, 32
SLICES = (24, 16, 16)  # a qkv-like projection: three output slices


@pytest.fixture(autouse=True)
def _grouped_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's wrapper with the grouped ops, as the plugin installs them in an engine."""
    for name, op in grouped.OPS.items():
        monkeypatch.setattr(punica_cpu, name, op)
    opaque._register_ops()


def make_wrapper() -> PunicaWrapperCPU:
    return opaque.OpaquePunicaWrapperCPU(max_num_batched_tokens=256, max_batches=64, device="cpu")


def set_step(wrapper: PunicaWrapperCPU, indices: list[int]) -> None:
    """What vLLM's `update_metadata` leaves for a step: per-token slots, always `is_prefill` on
    CPU (lora_model_runner_mixin.py), and the per-sequence metadata of the sgmv ops."""
    tensor = torch.tensor(indices)
    wrapper._token_lora_indices[: len(indices)].copy_(tensor)
    wrapper.indices_len[0] = len(indices)
    wrapper._update_prefill_metadata(wrapper.token_lora_indices)
    wrapper.is_prefill = True


def weights() -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    lora_a = tuple(torch.randn(MAX_LORAS, 1, RANK, HIDDEN) for _ in SLICES)
    lora_b = tuple(torch.randn(MAX_LORAS, 1, size, RANK) for size in SLICES)
    return lora_a, lora_b


STEPS = [
    [2] * 9,  # one adapter
    [0, 1, 1, 3, -1, 2, 2, -1, 0],  # mixed, with base rows
    [-1] * 6,  # base only
    [1] * 40 + [-1] * 3 + [3] * 5,  # a prefill-sized step
]


@pytest.mark.parametrize("indices", STEPS)
def test_each_opaque_method_matches_vllms_wrapper(indices: list[int]) -> None:
    torch.manual_seed(0)
    ours, theirs = make_wrapper(), PunicaWrapperCPU(256, 64, "cpu")
    set_step(ours, indices)
    set_step(theirs, indices)
    tokens = len(indices)
    x = torch.randn(tokens, HIDDEN)
    lora_a, lora_b = weights()
    base = torch.randn(tokens, sum(SLICES))

    got, want = base.clone(), base.clone()
    ours.add_lora_linear(got, x, lora_a, lora_b, 0.5, SLICES)
    theirs.add_lora_linear(want, x, lora_a, lora_b, 0.5, SLICES)
    torch.testing.assert_close(got, want)

    # The row-parallel path: a stacked float32 buffer, then expand at an offset.
    shrunk, want_shrunk = (torch.zeros(len(SLICES), tokens, RANK) for _ in range(2))
    ours.add_shrink(shrunk, x, lora_a, 2.0)
    theirs.add_shrink(want_shrunk, x, lora_a, 2.0)
    torch.testing.assert_close(shrunk, want_shrunk)
    wide = torch.randn(tokens, sum(SLICES) + 8)
    got, want = wide.clone(), wide.clone()
    ours.add_expand(got, shrunk, lora_b, SLICES, offset_start=8)
    theirs.add_expand(want, want_shrunk, lora_b, SLICES, offset_start=8)
    torch.testing.assert_close(got, want)

    embedded = torch.randn(tokens, RANK)
    lora_embed = torch.randn(MAX_LORAS, 1, HIDDEN, RANK)
    got, want = (torch.randn(tokens, HIDDEN),) * 2
    got, want = got.clone(), want.clone()
    ours.add_lora_embedding(got, embedded, lora_embed)
    theirs.add_lora_embedding(want, embedded, lora_embed)
    torch.testing.assert_close(got, want)


def test_a_graph_traced_once_follows_every_later_steps_adapters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Traced on the first step; then other adapters, other token counts, base-only and mixed
    steps run through the same graph (a recompile is an error here, as vLLM drops the guards
    that would trigger one) and give the eager results."""
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    torch._dynamo.reset()
    torch.manual_seed(1)
    wrapper, eager = make_wrapper(), PunicaWrapperCPU(256, 64, "cpu")
    lora_a, lora_b = weights()
    projection = torch.randn(sum(SLICES), HIDDEN)

    def layer(x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.silu(x @ projection.t())
        wrapper.add_lora_linear(out, x, lora_a, lora_b, 1.0, SLICES)
        return out * 2

    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    for indices in [[0, 1, 2], *STEPS]:
        set_step(wrapper, indices)
        set_step(eager, indices)
        x = torch.randn(len(indices), HIDDEN)
        want = torch.nn.functional.silu(x @ projection.t())
        eager.add_lora_linear(want, x, lora_a, lora_b, 1.0, SLICES)
        torch.testing.assert_close(compiled(x), want * 2)
    torch._dynamo.reset()


def test_rows_past_the_steps_mapping_get_no_lora_term() -> None:
    wrapper = make_wrapper()
    set_step(wrapper, [1, 1])
    wrapper._token_lora_indices[2:10] = 3  # stale slots from an earlier, longer step
    assert opaque.token_indices(wrapper.lorafleet_key, 5).tolist() == [1, 1, -1, -1, -1]


@pytest.fixture(scope="module")
def default_model_dir() -> Path:
    from lorafleet.adapters.base_models import fetch_model

    return fetch_model(None, progress=False)  # built by `make test` before pytest runs


def _engine_config(model_dir: Path, *, enable_lora: bool) -> object:
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=str(model_dir), dtype="float32", enable_lora=enable_lora,
                      max_model_len=512)  # fmt: skip
    return args.create_engine_config()


@pytest.mark.parametrize("switch", ["1", "0"])
def test_lora_engines_keep_the_compilation_mode_vllm_chose(
    switch: str, monkeypatch: pytest.MonkeyPatch, default_model_dir: Path
) -> None:
    from vllm.config import CompilationMode
    from vllm.platforms.cpu import CpuPlatform

    for name in ("check_and_update_config", "get_punica_wrapper"):
        monkeypatch.setattr(CpuPlatform, name, getattr(CpuPlatform, name))
    monkeypatch.setattr(CpuPlatform, "_lorafleet_compile", False, raising=False)
    monkeypatch.setenv(opaque.ENV_SWITCH, switch)
    opaque.register()
    with_lora = _engine_config(default_model_dir, enable_lora=True)
    without = _engine_config(default_model_dir, enable_lora=False)
    assert without.compilation_config.mode == CompilationMode.DYNAMO_TRACE_ONCE  # type: ignore[attr-defined]
    if switch == "1":
        assert with_lora.compilation_config.mode == CompilationMode.DYNAMO_TRACE_ONCE  # type: ignore[attr-defined]
        assert CpuPlatform.get_punica_wrapper() == opaque.WRAPPER_QUALNAME
    else:  # upstream: a LoRA engine runs eagerly
        assert with_lora.compilation_config.mode == CompilationMode.NONE  # type: ignore[attr-defined]
        assert CpuPlatform.get_punica_wrapper().endswith("PunicaWrapperCPU")


def test_the_plan_made_at_update_metadata_serves_each_step() -> None:
    """vLLM calls `update_metadata` when a step's mapping changes (lora ids, slot table); the
    plan worked out there gives what vLLM's own wrapper gives, step after step."""
    from vllm.lora.layers.utils import LoRAMapping

    torch.manual_seed(3)
    ours, theirs = make_wrapper(), PunicaWrapperCPU(256, 64, "cpu")
    lora_a, lora_b = weights()
    slots = [None, 11, 12, 13]  # lora id held by each slot
    for ids in ([11] * 5, [11, 0, 12, 13, 0, 12], [0] * 4, [13] * 3 + [11] * 2):
        mapping = LoRAMapping(tuple(ids), tuple(ids), is_prefill=True)
        for wrapper in (ours, theirs):
            wrapper.update_metadata(mapping, slots, len(slots), 1000)
        assert ours.lorafleet_plan is not None
        assert ours.lorafleet_plan.indices.tolist() == theirs.token_lora_indices.tolist()
        x = torch.randn(len(ids), HIDDEN)
        base = torch.randn(len(ids), sum(SLICES))
        got, want = base.clone(), base.clone()
        ours.add_lora_linear(got, x, lora_a, lora_b, 1.0, SLICES)
        theirs.add_lora_linear(want, x, lora_a, lora_b, 1.0, SLICES)
        torch.testing.assert_close(got, want)
