"""Hardware plan rules, and the QLoRA-on-CPU refusal through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorafleet.adapters.training.cli import main
from lorafleet.adapters.training.hardware import DeviceFacts, HardwareError, plan_hardware

CPU = DeviceFacts(
    cuda=False,
    cuda_bf16=False,
    device_name="CPU test x2",
    cpu_flags=frozenset({"avx2"}),
    cpu_count=2,
    bitsandbytes=False,
    torch_version="2.13.0+cpu",
)
A100 = DeviceFacts(
    cuda=True,
    cuda_bf16=True,
    device_name="NVIDIA A100",
    cpu_flags=frozenset(),
    cpu_count=32,
    bitsandbytes=True,
    torch_version="2.13.0",
)


def test_cpu_defaults_fp32_without_checkpointing() -> None:
    plan = plan_hardware(CPU, precision="auto", gradient_checkpointing=None, qlora=False)
    assert (plan.device, plan.precision, plan.gradient_checkpointing) == ("cpu", "fp32", False)
    assert plan.torch_dtype_name == "float32"


def test_gpu_defaults_bf16_with_checkpointing_and_nf4() -> None:
    plan = plan_hardware(A100, precision="auto", gradient_checkpointing=None, qlora=True)
    assert (plan.device, plan.precision, plan.gradient_checkpointing, plan.quantization) == (
        "cuda",
        "bf16",
        True,
        "nf4",
    )
    old = DeviceFacts(**{**A100.__dict__, "cuda_bf16": False})
    assert (
        plan_hardware(old, precision="auto", gradient_checkpointing=False, qlora=False).precision
        == "fp16"
    )


def test_explicit_choices_are_kept() -> None:
    plan = plan_hardware(CPU, precision="bf16", gradient_checkpointing=True, qlora=False)
    assert (plan.precision, plan.gradient_checkpointing) == ("bf16", True)
    with pytest.raises(HardwareError, match="fp16 training needs a GPU"):
        plan_hardware(CPU, precision="fp16", gradient_checkpointing=None, qlora=False)


def test_qlora_on_cpu_is_refused_clearly() -> None:
    with pytest.raises(HardwareError) as info:
        plan_hardware(CPU, precision="auto", gradient_checkpointing=None, qlora=True)
    message = str(info.value)
    assert "--qlora needs a CUDA GPU" in message
    assert "bitsandbytes" in message and "Drop --qlora" in message


def test_qlora_without_bitsandbytes() -> None:
    no_bnb = DeviceFacts(**{**A100.__dict__, "bitsandbytes": False})
    with pytest.raises(HardwareError, match=r"pip install 'lorafleet\[qlora\]'"):
        plan_hardware(no_bnb, precision="auto", gradient_checkpointing=None, qlora=True)


def test_cli_refuses_qlora_on_this_cpu_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    code = main(["train", "--qlora", "--dataset", str(data), "--output", str(tmp_path / "out")])
    assert code == 1
    assert "lorafleet train: --qlora needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
