"""Grouped LoRA ops for vLLM's CPU backend, installed as a vLLM general plugin.

vLLM's PyTorch-native punica ops (`vllm/lora/ops/torch_ops/lora_ops.py`, used by
`PunicaWrapperCPU`) compute every token's LoRA product as

    selected = lora_weights[token_lora_indices]          # a copy of the weights PER TOKEN
    out = einsum("bi, boi -> bo", x, selected)

so a step with T tokens copies T adapter matrices per layer and per projection before a batched
matrix-vector product. Two consequences, both measured on this project's CPU machines:

- speed: one rank-16 adapter at concurrency 32 ran at 0.25x of the base model's output tok/s
  (benchmarks/results/archive/2026-11-28-cpu/lora-overhead, `--compare-upstream-ops`);
- correctness: tokens without an adapter carry index -1, and `lora_weights[-1]` is the LAST
  adapter slot, so base-model rows batched with LoRA rows got an adapter applied
  (docs/design/base-guard.md has the reproduction).

The replacements below group the tokens by adapter index (a batch holds a handful of adapters)
and do one matrix product per adapter on the rows that use it; index -1 rows get no LoRA term.
Same signatures and write semantics as vLLM's functions, checked against them in
tests/vllm_plugins/test_cpu_lora_ops.py.

Installation: `pyproject.toml` declares `register` under the `vllm.general_plugins` entry-point
group, which vLLM loads in each of its processes. It patches only `PunicaWrapperCPU`'s module,
only on the CPU platform, and only unless `LORAFLEET_CPU_LORA_OPS=0`. It then installs
`cpu_lora_compile`, which keeps vLLM's compilation on for LoRA engines.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only tensor methods are used: the gateway imports this without torch
    import torch

# A child of vLLM's "vllm" logger, so the line shows in the engine's log with vLLM's format.
log = logging.getLogger("vllm.plugins.lorafleet_cpu_lora_ops")

ENV_SWITCH = "LORAFLEET_CPU_LORA_OPS"


class _Plan:
    """How a step's tokens split over adapters. vLLM calls the ops for every LoRA layer and
    slice of a step with the same indices, so the split is worked out once per step: the cache
    holds the last plan and its indices, compared by value (cheap: one token index each)."""

    def __init__(self, indices: torch.Tensor) -> None:
        self.indices = indices.clone()
        present = [int(i) for i in indices.unique().tolist()]  # type: ignore[no-untyped-call]
        self.adapters = [i for i in present if i >= 0]
        # The one adapter every row uses (no row selection needed), if there is one.
        self.single = present[0] if len(present) == 1 and present[0] >= 0 else None
        self.rows = {i: (indices == i).nonzero().squeeze(1) for i in self.adapters}
        self.base_rows = (indices < 0).unsqueeze(1)
        self.positions = indices.new_ones(indices.shape[0]).cumsum(0) - 1
        self.slots = indices.clamp(min=0)


class _PlanCache:
    def __init__(self) -> None:
        self._last: _Plan | None = None
        self._exploded: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._live: dict[tuple[int, int, tuple[int, ...]], frozenset[int]] = {}

    def live_slots(self, weights: torch.Tensor) -> frozenset[int] | None:
        """Adapter slots whose weights in this stacked tensor are not all zero, or None when
        unknown. vLLM wraps every projection (qkv, o, gate_up, down) whatever the adapters
        target, and zero-fills the slots of modules an adapter leaves alone: their product is
        zero and is skipped. Cached per tensor and its version counter, which every in-place
        write (an adapter loaded into a slot) bumps."""
        version = getattr(weights, "_version", None)
        if not isinstance(version, int):
            return None
        key = (weights.data_ptr(), version, tuple(weights.shape))
        live = self._live.get(key)
        if live is None:
            if len(self._live) > 4096:  # stale versions of tensors, after many adapter loads
                self._live.clear()
            flags = weights.reshape(weights.shape[0], -1).ne(0).any(dim=1).tolist()
            live = self._live[key] = frozenset(i for i, flag in enumerate(flags) if flag)
        return live

    def plan(self, indices: torch.Tensor) -> _Plan:
        last = self._last
        if (
            last is None
            or last.indices.shape != indices.shape
            or not bool((last.indices == indices).all())
        ):
            last = self._last = _Plan(indices)
        return last

    def explode(self, lora_indices: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
        """Per-sequence adapter indices to per-token ones (the same tensor again while the
        step's metadata is unchanged, so `plan` hits its cache)."""
        cached = self._exploded
        if (
            cached is not None
            and cached[0].shape == lora_indices.shape
            and cached[1].shape == seq_lens.shape
            and bool((cached[0] == lora_indices).all())
            and bool((cached[1] == seq_lens).all())
        ):
            return cached[2]
        exploded = lora_indices.repeat_interleave(seq_lens)
        self._exploded = (lora_indices.clone(), seq_lens.clone(), exploded)
        return exploded


# One cache per vLLM worker process (the ops are plain functions called by vLLM).
_CACHE = _PlanCache()


def by_slot(weights: torch.Tensor) -> torch.Tensor:
    """vLLM's stacked LoRA weights as [max_loras, out, in] (it also stores [max_loras, 1, ...])."""
    return weights.squeeze(1) if weights.dim() == 4 else weights


def plan_for(indices: torch.Tensor) -> _Plan:
    """How this step's tokens split over adapters (cached while the indices are unchanged)."""
    return _CACHE.plan(indices)


def slot_is_live(weights: torch.Tensor, slot: int) -> bool:
    """Whether adapter `slot` of this stacked tensor has any non-zero weight (unknown: True)."""
    live = _CACHE.live_slots(weights)
    return live is None or slot in live


def _lora_product(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor | None:
    """Row t of the result is `inputs[t] @ weights[indices[t]].T`, zeros where indices[t] < 0;
    None when no row has an adapter.

    `weights` is vLLM's stacked layout: [max_loras, 1, out, in] or [max_loras, out, in]."""
    weights = by_slot(weights)
    if indices.numel() == 0:
        return None
    plan = _CACHE.plan(indices)
    live = _CACHE.live_slots(weights) if plan.adapters else None
    adapters = [a for a in plan.adapters if live is None or a in live]
    if not adapters:
        return None  # no row has an adapter, or none of theirs touches this module
    inputs = inputs.to(dtype)
    if plan.single is not None:  # the common case: one adapter for the whole batch
        return inputs @ weights[plan.single].to(dtype).t()
    slots, out_dim = weights.shape[0], weights.shape[1]
    if len(adapters) > 2 and out_dim * slots <= 1024:
        # A narrow product (LoRA A: out_dim is the rank): every slot at once, [T, in] @
        # [in, slots*rank], then each row keeps its own block. Cheaper than a loop over adapters.
        full = inputs @ weights.reshape(slots * out_dim, -1).to(dtype).t()
        picked = full.view(inputs.shape[0], slots, out_dim)[plan.positions, plan.slots]
        return picked.masked_fill_(plan.base_rows, 0.0)
    out = inputs.new_zeros((inputs.shape[0], out_dim))
    for index in adapters:
        rows = plan.rows[index]
        out.index_copy_(0, rows, inputs.index_select(0, rows) @ weights[index].to(dtype).t())
    return out


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        output_tensor[:, : _out_dim(lora_b_weights)] = 0.0
        return
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        if not add_inputs:
            common = min(_out_dim(lora_b_weights), output_tensor.shape[1])
            output_tensor[:, :common] = 0.0
        return
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # LoRA adapter and model may add different amounts of padding to output
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        if not add_inputs:
            output_tensor[:, slice_offset : slice_offset + slice_size] = 0.0
        return
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def _out_dim(weights: torch.Tensor) -> int:
    return int(weights.shape[-2])


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    indices = _CACHE.explode(lora_indices_tensor, seq_len_tensor)
    bgmv_shrink(inputs, lora_a_weights, output_tensor, indices, scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    indices = _CACHE.explode(lora_indices_tensor, seq_len_tensor)
    bgmv_expand(inputs, lora_b_weights, output_tensor, indices, add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    indices = _CACHE.explode(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(
        inputs, lora_b_weights, output_tensor, indices, slice_offset, slice_size, add_inputs
    )


OPS = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}


def enabled() -> bool:
    """Whether vLLM processes started with this environment get the grouped ops."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def register() -> None:
    """vLLM general-plugin entry point: runs in every vLLM process, maybe more than once."""
    if not enabled():
        return
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # vLLM without LoRA support, or not vLLM at all
        return
    for name, op in OPS.items():
        setattr(punica_cpu, name, op)
    log.info("lorafleet: grouped CPU LoRA ops installed (%s=0 turns them off)", ENV_SWITCH)
    from lorafleet.vllm_plugins import cpu_lora_compile

    cpu_lora_compile.register()
