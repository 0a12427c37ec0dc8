"""A tiny real scenario against a real bare vLLM engine on CPU (integration; ~1-2 minutes).

The engine is started once per session, like TGI's launcher fixture: its log is printed if it
never becomes ready. The scenario starts the gateway itself, as `lorafleet bench` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from lorafleet.benchmarks.cli import add_parser
from lorafleet.benchmarks.processes import (
    ManagedProcess,
    ProcessStack,
    VllmOptions,
    find_free_port,
    vllm_engine,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def engine(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    with ProcessStack(tmp_path_factory.mktemp("engine-logs")) as stack:
        process = stack.start(vllm_engine(model_dir, find_free_port(), VllmOptions(kv_cache_gib=1)))
        stack.wait_ready()
        yield process


def test_gateway_overhead_tiny(engine: ManagedProcess, model_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="lorafleet")
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "gateway-overhead"
    args = parser.parse_args(
        [
            "bench",
            "gateway-overhead",
            "--target",
            f"engine={engine.url}",
            "--model-dir",
            str(model_dir),
            "--concurrencies",
            "1,4",
            "--single-requests",
            "4",
            "--single-output-len",
            "4",
            "--output-len",
            "4",
            "--requests-per-slot",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "1",
            "--no-fake",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0, (out / "logs" / "gateway.log").read_text(errors="replace")[-3000:]
    result = orjson.loads((out / "result.json").read_bytes())
    assert set(result["arms"]) == {"direct c=1", "gateway c=1", "direct c=4", "gateway c=4"}
    for arm in result["arms"].values():
        (run,) = arm["runs"]
        assert run["failed"] == 0 and run["usage_reported"]
        assert run["total_output_tokens"] == arm["workload"]["num_requests"] * 4  # ignore_eos held
    chunks = next(c for c in result["comparisons"] if c["name"] == "chunks per request ratio, c=4")
    assert chunks["value"] == pytest.approx(1.0)  # the gateway relays every chunk
    assert result["arms"]["gateway c=4"]["runs"][0]["gateway_cpu_s"] > 0
    assert {row["measure"] for row in result["headline"]} >= {
        "gateway added TTFT p50 (c=1, streaming) vs direct vLLM"
    }
    assert (out / "summary.md").is_file() and (out / "throughput.png").is_file()
