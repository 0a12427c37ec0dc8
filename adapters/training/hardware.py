"""Hardware-aware training settings: precision, gradient checkpointing, QLoRA.

Measured on this project's CPU machines (2 AMD EPYC cores, AVX2, no AVX-512): TRL's defaults
(bf16 + gradient checkpointing) ran SmolLM2-135M at 125 s/step, fp32 without checkpointing at
about 9 s/step. CPUs without native bf16 (AVX-512 BF16 or AMX) emulate it, and checkpointing
recomputes activations a small model does not need to drop. So:

| device | precision (auto) | gradient checkpointing (auto) | --qlora |
|---|---|---|---|
| CUDA with bf16 (Ampere+) | bf16 | on | NF4 4-bit base via bitsandbytes |
| CUDA without bf16 | fp16 | on | NF4 4-bit base via bitsandbytes |
| CPU | fp32 | off | refused: bitsandbytes NF4 kernels need CUDA |

`plan_hardware` is a pure function of `DeviceFacts` so the rules are tested without a GPU;
`detect_device` fills the facts from torch and /proc/cpuinfo.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class HardwareError(RuntimeError):
    """The requested setting cannot run on this machine; the message says what to do."""


@dataclass(frozen=True)
class DeviceFacts:
    cuda: bool
    cuda_bf16: bool
    device_name: str
    cpu_flags: frozenset[str]
    cpu_count: int
    bitsandbytes: bool
    torch_version: str


@dataclass(frozen=True)
class HardwarePlan:
    device: str  # "cuda" | "cpu"
    device_name: str
    precision: str  # "fp32" | "bf16" | "fp16"
    gradient_checkpointing: bool
    quantization: str | None  # "nf4" or None

    @property
    def torch_dtype_name(self) -> str:
        return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[self.precision]


def cpu_has_native_bf16(flags: frozenset[str]) -> bool:
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def plan_hardware(
    facts: DeviceFacts, *, precision: str, gradient_checkpointing: bool | None, qlora: bool
) -> HardwarePlan:
    if qlora:
        _check_qlora(facts)
    if facts.cuda:
        chosen = precision if precision != "auto" else ("bf16" if facts.cuda_bf16 else "fp16")
        if chosen == "bf16" and not facts.cuda_bf16:
            raise HardwareError(f"{facts.device_name} has no bf16 support; use --precision fp16")
        checkpointing = True if gradient_checkpointing is None else gradient_checkpointing
        return HardwarePlan(
            "cuda", facts.device_name, chosen, checkpointing, "nf4" if qlora else None
        )
    chosen = "fp32" if precision == "auto" else precision
    if chosen == "fp16":
        raise HardwareError("fp16 training needs a GPU; on CPU use fp32 (default) or bf16")
    if chosen == "bf16" and not cpu_has_native_bf16(facts.cpu_flags):
        logger.warning(
            "bf16 on a CPU without AVX-512 BF16/AMX is emulated and was measured ~14x slower "
            "than fp32 here; consider --precision fp32"
        )
    checkpointing = False if gradient_checkpointing is None else gradient_checkpointing
    return HardwarePlan("cpu", facts.device_name, chosen, checkpointing, None)


def _check_qlora(facts: DeviceFacts) -> None:
    if not facts.cuda:
        raise HardwareError(
            "--qlora needs a CUDA GPU: it loads the base model in 4-bit NF4 with bitsandbytes, "
            f"whose kernels run only on CUDA, and this machine has none (torch "
            f"{facts.torch_version}, {facts.device_name}). Drop --qlora to train a LoRA adapter "
            "on the full-precision base (fp32 on CPU)."
        )
    if not facts.bitsandbytes:
        raise HardwareError(
            "--qlora needs the bitsandbytes package: pip install 'lorafleet[qlora]'"
        )


def detect_device() -> DeviceFacts:
    import torch

    cuda = torch.cuda.is_available()
    flags = _cpu_flags()
    return DeviceFacts(
        cuda=cuda,
        cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        device_name=torch.cuda.get_device_name(0) if cuda else _cpu_name(),
        cpu_flags=flags,
        cpu_count=os.cpu_count() or 1,
        bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None,
        torch_version=str(torch.__version__),
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: no flags known, so no native bf16 is assumed
        return []


def _cpu_flags() -> frozenset[str]:
    for line in _cpuinfo():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return f"CPU {line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return f"CPU x{os.cpu_count()}"
