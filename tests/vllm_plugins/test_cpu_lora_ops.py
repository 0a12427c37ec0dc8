"""The grouped CPU LoRA ops give vLLM's results, except that rows without an adapter (-1) get no
LoRA term (vLLM's ops index slot -1, the last adapter: the bug they fix)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from vllm.lora.ops.torch_ops import lora_ops as reference

from lorafleet.vllm_plugins import cpu_lora_ops as grouped

REPO = Path(__file__).resolve().parents[2]
MAX_LORAS, RANK, HIDDEN, OUT = 4, 8, 32, 48


def stacked(rows: int, cols: int, *, four_d: bool = True) -> torch.Tensor:
    weights = torch.randn(MAX_LORAS, rows, cols)
    return weights.unsqueeze(1) if four_d else weights


@pytest.mark.parametrize(
    "indices",
    [
        [2] * 7,  # one adapter: the fast path
        [0, 1, 1, 3, 0, 2, 2],  # several adapters: a dense A product over every slot
        [0, -1, 1, 2, -1, 3, 0],  # ... with base rows
        [1, -1, 1, -1, -1, 3, 1],  # two adapters and base rows: a product per adapter
        [i % 5 - 1 for i in range(200)],  # many tokens
        [0] * 100 + [1, 2, -1, 3],  # very uneven groups
        [-1] * 5,  # no adapter at all
    ],
)
@pytest.mark.parametrize("four_d", [True, False])
def test_shrink_and_expand_match_vllm(indices: list[int], four_d: bool) -> None:
    torch.manual_seed(0)
    index = torch.tensor(indices)
    x = torch.randn(len(indices), HIDDEN)
    lora_a, lora_b = stacked(RANK, HIDDEN, four_d=four_d), stacked(OUT, RANK, four_d=four_d)
    safe = torch.where(index < 0, MAX_LORAS, index)

    def pad(weights: torch.Tensor) -> torch.Tensor:
        return torch.cat([weights, torch.zeros_like(weights[:1])])

    shrunk, want_shrunk = torch.zeros(len(indices), RANK), torch.zeros(len(indices), RANK)
    grouped.bgmv_shrink(x, lora_a, shrunk, index, 0.5)
    reference.bgmv_shrink(x, pad(lora_a), want_shrunk, safe, 0.5)
    torch.testing.assert_close(shrunk, want_shrunk)

    base = torch.randn(len(indices), OUT + 8)
    for add in (True, False):
        got, want = base.clone(), base.clone()
        grouped.bgmv_expand(shrunk, lora_b, got, index, add)
        reference.bgmv_expand(shrunk, pad(lora_b), want, safe, add)
        torch.testing.assert_close(got, want)
        got, want = base.clone(), base.clone()
        grouped.bgmv_expand_slice(shrunk, lora_b, got, index, 4, OUT, add)
        reference.bgmv_expand_slice(shrunk, pad(lora_b), want, safe, 4, OUT, add)
        torch.testing.assert_close(got, want)


def test_sequence_ops_expand_per_sequence_indices() -> None:
    torch.manual_seed(1)
    seq_lens, adapters = torch.tensor([3, 2, 4]), torch.tensor([1, -1, 2])
    tokens = int(seq_lens.sum())
    x, lora_a = torch.randn(tokens, HIDDEN), stacked(RANK, HIDDEN)
    start = torch.cumsum(seq_lens, 0) - seq_lens
    meta = (start, seq_lens, adapters, 3, 4, tokens)
    got = torch.zeros(tokens, RANK)
    grouped.sgmv_shrink(x, lora_a, got, *meta, 1.0)
    per_token = torch.repeat_interleave(adapters, seq_lens)
    want = torch.zeros(tokens, RANK)
    grouped.bgmv_shrink(x, lora_a, want, per_token, 1.0)
    torch.testing.assert_close(got, want)
    assert got[3:5].abs().sum() == 0  # the base sequence got no LoRA term
    lora_b, out = stacked(OUT, RANK), torch.zeros(tokens, OUT)
    grouped.sgmv_expand(got, lora_b, out, *meta, False)
    assert out[3:5].abs().sum() == 0 and out[:3].abs().sum() > 0
    sliced = torch.zeros(tokens, OUT + 4)
    grouped.sgmv_expand_slice(got, lora_b, sliced, *meta, 2, OUT, False)
    torch.testing.assert_close(sliced[:, 2 : 2 + OUT], out)


def test_vllm_applies_an_adapter_to_base_rows_which_the_grouped_ops_do_not() -> None:
    """The upstream behaviour this module exists to fix, kept as a regression witness."""
    index = torch.tensor([0, -1])
    x, lora_a = torch.ones(2, HIDDEN), stacked(RANK, HIDDEN)
    upstream, ours = torch.zeros(2, RANK), torch.zeros(2, RANK)
    reference.bgmv_shrink(x, lora_a, upstream, index, 1.0)
    grouped.bgmv_shrink(x, lora_a, ours, index, 1.0)
    assert upstream[1].abs().sum() > 0  # slot -1: the last adapter, applied to a base row
    assert ours[1].abs().sum() == 0


def test_the_plugin_is_declared_and_patches_the_cpu_wrapper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pyproject.toml, not the installed metadata: an install made before the plugin moved still
    # names the old module until it is reinstalled (pip install -e .).
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"]["vllm.general_plugins"]
    assert declared["lorafleet_cpu_lora_ops"] == "lorafleet.vllm_plugins.cpu_lora_ops:register"
    entry = EntryPoint("lorafleet_cpu_lora_ops", declared["lorafleet_cpu_lora_ops"], "x")
    assert entry.load() is grouped.register
    punica_cpu = importlib.import_module("vllm.lora.punica_wrapper.punica_cpu")
    for name in grouped.OPS:
        monkeypatch.setattr(punica_cpu, name, getattr(reference, name))
    monkeypatch.setenv(grouped.ENV_SWITCH, "0")
    grouped.register()
    assert punica_cpu.bgmv_shrink is reference.bgmv_shrink  # switched off: untouched
    monkeypatch.setenv(grouped.ENV_SWITCH, "1")
    grouped.register()
    for name, op in grouped.OPS.items():
        assert getattr(punica_cpu, name) is op


def test_a_reused_index_tensor_changed_in_place_is_not_served_a_stale_plan() -> None:
    """vLLM updates its index buffers in place between steps; the per-step plan must follow."""
    torch.manual_seed(2)
    x, lora_a = torch.randn(4, HIDDEN), stacked(RANK, HIDDEN)
    index = torch.tensor([0, 0, 0, 0])
    for values in ([0, 0, 0, 0], [1, 2, 3, -1], [3, 3, -1, -1], [1, 2, 3, -1]):
        index.copy_(torch.tensor(values))
        got = torch.zeros(4, RANK)
        grouped.bgmv_shrink(x, lora_a, got, index, 1.0)
        for row, slot in enumerate(values):
            want = torch.zeros(RANK) if slot < 0 else x[row] @ lora_a[slot, 0].t()
            torch.testing.assert_close(got[row], want)


def test_zero_slots_are_skipped_until_an_adapter_is_written_into_them() -> None:
    """vLLM zero-fills the slots of modules an adapter does not target; loading an adapter
    writes into the stacked tensor in place, which the skip must notice."""
    torch.manual_seed(3)
    x, lora_a = torch.randn(3, HIDDEN), torch.zeros(MAX_LORAS, 1, RANK, HIDDEN)
    index = torch.tensor([1, 2, 1])
    got = torch.full((3, RANK), 7.0)
    grouped.bgmv_shrink(x, lora_a, got, index, 1.0)
    assert got.abs().sum() == 0  # all-zero slots: skipped, and the output still zeroed
    lora_a[2].copy_(torch.randn(1, RANK, HIDDEN))  # "load" an adapter into slot 2, in place
    grouped.bgmv_shrink(x, lora_a, got, index, 1.0)
    torch.testing.assert_close(got[1], x[1] @ lora_a[2, 0].t())
    assert got[0].abs().sum() == 0 and got[2].abs().sum() == 0


def test_the_plugin_package_needs_nothing_from_the_gateway() -> None:
    """It is imported in vLLM's processes: no lorafleet.server, and no torch until an op runs."""
    code = (
        "import sys, lorafleet.vllm_plugins.cpu_lora_ops\n"
        "print(sorted(m for m in sys.modules if m.startswith('lorafleet.server') or m == 'torch'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.stdout.strip() == "[]"
