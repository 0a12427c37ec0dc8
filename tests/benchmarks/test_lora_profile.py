"""The profile scenario reads torch's operator table as vLLM's worker writes it (the table here
is made by torch's own profiler, not typed by hand) and the flag it gives vLLM parses."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lorafleet.benchmarks.scenarios import lora_profile
from lorafleet.vllm_plugins import cpu_lora_compile


class _Step:
    token_lora_indices = torch.tensor([0, 1, -1, 1] * 16)


def real_table() -> str:
    """A profile of a LoRA op and some base work, as `key_averages().table()` prints it."""
    cpu_lora_compile._register_ops()
    cpu_lora_compile._WRAPPERS[99] = _Step()
    x, weight = torch.randn(64, 256), torch.randn(256, 256)
    lora_a = [torch.randn(4, 1, 16, 256)]
    lora_b = [torch.randn(4, 1, 256, 16)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            y = x @ weight
            torch.ops.lorafleet.lora_linear(y, x, lora_a, lora_b, 1.0, [256], 99)
    return str(prof.key_averages().table(sort_by="self_cpu_time_total"))


def test_the_summary_reads_a_real_profiler_table() -> None:
    table = real_table()
    rows, total = lora_profile.parse_table(table)
    names = {row["name"] for row in rows}
    assert "lorafleet::lora_linear" in names and "aten::mm" in names
    assert total > 0
    assert sum(row["self_cpu_s"] for row in rows) == pytest.approx(total, rel=0.05)
    summary = lora_profile.summarize(table)
    (lora,) = summary["lora_ops"]
    assert lora["calls"] == 5
    assert lora["cpu_total_s"] >= lora["self_cpu_s"]  # it includes the matmuls it calls
    assert 0 < summary["lora_share"] < 1
    assert summary["compiled_share"] == 0  # nothing compiled here
    assert summary["top_self_cpu"][0]["self_cpu_s"] == max(r["self_cpu_s"] for r in rows)


def test_a_table_without_its_total_is_refused() -> None:
    table = real_table()
    cut = "\n".join(line for line in table.splitlines() if "Self CPU time total" not in line)
    with pytest.raises(ValueError, match="Self CPU time total"):
        lora_profile.parse_table(cut)


def test_the_profiler_flag_is_one_word_vllm_reads(tmp_path: Path) -> None:
    """The gateway splits LORAFLEET_ENGINE_EXTRA_ARGS on spaces: the JSON has none, and vLLM's
    argument parser reads it into its profiler config."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = lora_profile.profiler_args(tmp_path)
    assert " ".join(args).split() == args == shlex.split(shlex.join(args))
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    parsed = parser.parse_args(["--model", "m", *args])
    config = parsed.profiler_config
    given = json.loads(args[1])
    assert config.profiler == "torch" and config.torch_profiler_dir == given["torch_profiler_dir"]
    assert config.torch_profiler_with_stack is False
