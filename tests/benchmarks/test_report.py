"""Results: the run JSON uses vLLM's field names (and vLLM's math), the scenario JSON has a
stable schema, the Markdown and README are built from it."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from lorafleet.benchmarks.loadgen import RequestRecord
from lorafleet.benchmarks.metrics import compute_metrics
from lorafleet.benchmarks.report import render_readme, write_result
from lorafleet.benchmarks.scenarios.base import (
    SCHEMA,
    Arm,
    BenchContext,
    Options,
    Workload,
    compare,
    headline_row,
)
from tests.benchmarks.conftest import FakeServer

# Keys `vllm bench serve --save-result --save-detailed` writes that our per-run files must share.
VLLM_RUN_KEYS = {
    "date",
    "backend",
    "label",
    "model_id",
    "tokenizer_id",
    "num_prompts",
    "request_rate",
    "burstiness",
    "max_concurrency",
    "duration",
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "latencies",
    "start_times",
    "errors",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
} | {
    f"{stat}_{m}_ms"
    for stat in ("mean", "median", "std", "p99")
    for m in ("ttft", "tpot", "itl", "e2el")
}
RESULT_KEYS = {
    "schema",
    "scenario",
    "date",
    "finished",
    "machine",
    "software",
    "load_average_at_start",
    "load_average_at_end",
    "command",
    "settings",
    "targets",
    "arms",
    "comparisons",
    "headline",
    "generator",
    "notes",
    "plots",
}
MACHINE_KEYS = {
    "cpu_model",
    "logical_cpus",
    "usable_cpus",
    "memory_gib",
    "gpu",
    "platform",
    "cpu_flags",
}
HEADLINE_KEYS = {"measure", "value", "unit", "min", "max", "bar", "meets_bar", "workload", "date"}


@pytest.fixture(scope="module")
def two_arm_result(
    fake_server: FakeServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("bench")
    ctx = BenchContext(
        "unit", Options(out_dir=out, repeats=2, progress=False, warmup=1, goodput={"ttft": 500})
    )
    workload = Workload(num_requests=6, input_len=8, output_len=4, concurrency=3)
    a = Arm("a", fake_server.url, "fake-model", workload)
    b = Arm("b", fake_server.url, "fake-model", workload)
    ctx.run_arms([a, b])
    comparison = compare(
        "a / b", a, b, "output_throughput", bar=">= 0.5", passes=lambda v: v >= 0.5
    )
    result = ctx.result(
        arms=[a, b],
        comparisons=[comparison],
        headline=[headline_row("a vs b", comparison, "x", workload.describe())],
    )
    write_result(out, result, [])
    return out, result


def test_scenario_result_schema(two_arm_result: tuple[Path, dict[str, object]]) -> None:
    out, _ = two_arm_result
    result = orjson.loads((out / "result.json").read_bytes())
    assert set(result) >= RESULT_KEYS and result["schema"] == SCHEMA
    assert set(result["machine"]) >= MACHINE_KEYS and result["machine"]["usable_cpus"] >= 1
    assert {"python", "httpx"} <= set(result["software"])
    arm = result["arms"]["a"]
    assert set(arm) >= {"target", "model", "adapters", "workload", "runs", "summary"}
    assert len(arm["runs"]) == 2 and arm["runs"][0]["completed"] == 6
    assert arm["summary"]["output_throughput"]["n"] == 2
    assert set(arm["summary"]["median_ttft_ms"]) == {"median", "min", "max", "mean", "stdev", "n"}
    assert arm["workload"]["request_rate"] == "inf" and "c=3" in arm["workload"]["description"]
    (row,) = result["headline"]
    assert set(row) == HEADLINE_KEYS and row["meets_bar"] is True
    (comp,) = result["comparisons"]
    assert len(comp["per_repeat"]) == 2 and comp["a"] == "a"
    assert result["generator"]["cpu_s_total"] > 0


def test_run_files_use_vllm_field_names(two_arm_result: tuple[Path, dict[str, object]]) -> None:
    out, _ = two_arm_result
    files = sorted((out / "runs").glob("*.json"))
    assert [f.name for f in files] == ["a-r1.json", "a-r2.json", "b-r1.json", "b-r2.json"]
    run = orjson.loads(files[0].read_bytes())
    assert set(run) >= VLLM_RUN_KEYS, VLLM_RUN_KEYS - set(run)
    assert run["request_goodput"] is not None and len(run["itls"]) == 6
    assert all(len(itl) == 3 for itl in run["itls"])


def test_markdown_summary(two_arm_result: tuple[Path, dict[str, object]]) -> None:
    out, _ = two_arm_result
    text = (out / "summary.md").read_text()
    for needle in (
        "# `lorafleet bench unit`",
        "## Headline",
        "| a vs b |",
        "## Arms",
        "## Comparisons",
        "load average",
        "AMD" if "AMD" in text else "machine:",
    ):
        assert needle in text


def test_readme_collects_headlines(two_arm_result: tuple[Path, dict[str, object]]) -> None:
    out, _ = two_arm_result
    text = render_readme(out.parent)
    assert "| a vs b |" in text and "summary.md" in text and "do not edit numbers by hand" in text


def test_same_numbers_as_vllm_calculate_metrics() -> None:
    """Cross-check against vLLM's own `calculate_metrics` on the same request outputs."""
    serve = pytest.importorskip("vllm.benchmarks.serve")
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput

    records = [
        RequestRecord(
            success=True,
            ttft=0.1 + i / 100,
            itl=[0.02 + i / 1000] * (3 + i),
            latency=0.1 + i / 100 + (0.02 + i / 1000) * (3 + i),
            output_tokens=4 + i,
            prompt_len=10 + i,
            start_time=i * 0.3,
            chunks=4 + i,
        )
        for i in range(7)
    ] + [RequestRecord(success=False, error="boom")]
    outputs = [
        RequestFuncOutput(
            success=r.success,
            latency=r.latency,
            output_tokens=r.output_tokens,
            ttft=r.ttft,
            itl=list(r.itl),
            prompt_len=r.prompt_len,
            start_time=r.start_time,
            error=r.error,
        )
        for r in records
    ]
    theirs, _ = serve.calculate_metrics(
        input_requests=[],
        outputs=outputs,
        dur_s=3.0,
        tokenizer=None,
        selected_percentiles=[50.0, 90.0, 99.0],
        goodput_config_dict={"ttft": 130.0, "tpot": 30.0},
    )
    ours = compute_metrics(
        records, 3.0, percentiles=(50.0, 90.0, 99.0), goodput_slos_ms={"ttft": 130.0, "tpot": 30.0}
    )
    for field in (
        "completed",
        "failed",
        "total_input",
        "total_output",
        "request_throughput",
        "request_goodput",
        "output_throughput",
        "total_token_throughput",
        "max_output_tokens_per_s",
        "max_concurrent_requests",
    ):
        key = {"total_input": "total_input_tokens", "total_output": "total_output_tokens"}.get(
            field, field
        )
        assert ours[key] == pytest.approx(getattr(theirs, field)), field
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std"):
            assert ours[f"{stat}_{metric}_ms"] == pytest.approx(
                getattr(theirs, f"{stat}_{metric}_ms")
            ), (stat, metric)
        for pct, value in getattr(theirs, f"percentiles_{metric}_ms"):
            assert ours[f"p{int(pct)}_{metric}_ms"] == pytest.approx(value), (pct, metric)
    assert not math.isnan(ours["mean_itl_ms"])
