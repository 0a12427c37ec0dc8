"""Grouped LoRA ops for vLLM's CPU backend, installed as a vLLM general plugin.

vLLM's PyTorch-native punica ops (`vllm/lora/ops/torch_ops/lora_ops.py`, used by
`PunicaWrapperCPU`) compute every token's LoRA product as

    selected = lora_weights[token_lora_indices]          # a copy of the weights PER TOKEN
    out = einsum("bi, boi -> bo", x, selected)

so a step with T tokens copies T adapter matrices per layer and per projection before a batched
matrix-vector product. Two consequences, both measured on this project's CPU machines:

- speed: one adapter at concurrency 32 ran at 0.22x of the base model's output tok/s
  (benchmarks/results/*/lora-overhead), far below the GPU kernels' 0.66-0.96x;
- correctness: tokens without an adapter carry index -1, and `lora_weights[-1]` is the LAST
  adapter slot, so base-model rows batched with LoRA rows got an adapter applied
  (docs/design/base-guard.md has the reproduction).

The replacements below group the tokens by adapter index (a batch holds a handful of adapters)
and do one matrix product per adapter on the rows that use it; index -1 rows get no LoRA term.
Same signatures and write semantics as vLLM's functions, checked against them in
tests/server/engine/test_cpu_lora_ops.py.

Installation: `pyproject.toml` declares `register` under the `vllm.general_plugins` entry-point
group, which vLLM loads in each of its processes. It patches only `PunicaWrapperCPU`'s module,
only on the CPU platform, and only unless `LORAFLEET_CPU_LORA_OPS=0`.
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


def _lora_product(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Row t of the result is `inputs[t] @ weights[indices[t]].T`, or zeros when indices[t] < 0.

    `weights` is vLLM's stacked layout: [max_loras, 1, out, in] or [max_loras, out, in]."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    if indices.numel() > 0:
        first = int(indices[0])
        if bool((indices == first).all()):  # the common case: one adapter (or none) in the batch
            if first >= 0:
                return inputs @ weights[first].to(dtype).t()
            return inputs.new_zeros((inputs.shape[0], weights.shape[1]))
    out = inputs.new_zeros((inputs.shape[0], weights.shape[1]))
    for index in indices.unique().tolist():  # type: ignore[no-untyped-call]
        if index < 0:
            continue  # no adapter on these rows
        rows = (indices == index).nonzero().squeeze(1)
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
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
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
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def _explode(lora_indices: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
    return lora_indices.repeat_interleave(seq_lens)


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
    indices = _explode(lora_indices_tensor, seq_len_tensor)
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
    indices = _explode(lora_indices_tensor, seq_len_tensor)
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
    indices = _explode(lora_indices_tensor, seq_len_tensor)
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
