"""`gateway-overhead`: the same load straight to vLLM and through the lorafleet gateway.

    lorafleet bench gateway-overhead                          # starts a vLLM engine + gateway
    lorafleet bench gateway-overhead --target engine=http://127.0.0.1:8300 \
                                     --target gateway=http://127.0.0.1:8301

Roles: `engine` (bare vLLM), `gateway` (lorafleet fronting that same engine). At each concurrency
the two arms run back to back, alternating order each repeat. Reports added TTFT p50/p99, ITL
(and chunks per request: the gateway must not coalesce), the throughput ratio, and the gateway's
CPU seconds per 1k output tokens (when the benchmark started it).
"""

from __future__ import annotations

import argparse
from typing import Any

from lorafleet.benchmarks.processes import find_free_port, gateway_process, vllm_engine
from lorafleet.benchmarks.scenarios.base import Arm, BenchContext, Workload, compare, headline_row

NAME = "gateway-overhead"
HELP = "same load direct to vLLM and through the gateway: added latency, throughput ratio"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrencies", default="1,32,64", help="comma list of concurrency levels"
    )
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--single-requests", type=int, default=32, help="requests per run at c=1")
    parser.add_argument("--single-output-len", type=int, default=16, help="output tokens at c=1")
    parser.add_argument(
        "--requests-per-slot", type=int, default=2, help="requests per run = this * c (c > 1)"
    )


def setup(ctx: BenchContext) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """Engine and gateway URLs, and the processes whose CPU each arm meters."""
    engine_url = ctx.given("engine")
    gateway_url = ctx.given("gateway")
    if gateway_url and not engine_url:
        raise_missing("engine")
    taken: set[int] = set()
    engine_proc = gateway_proc = None
    if not engine_url:
        engine_proc = ctx.stack.start(
            vllm_engine(ctx.model_dir(), find_free_port(taken=taken), ctx.options.engine)
        )
        ctx.started("engine", engine_proc)
        engine_url = engine_proc.url
    if not gateway_url:
        if engine_proc:
            ctx.stack.wait_ready([engine_proc])
        spec = gateway_process(
            [engine_url], ctx.options.served_model_name, find_free_port(taken=taken)
        )
        gateway_proc = ctx.stack.start(spec)
        ctx.started("gateway", gateway_proc)
        gateway_url = gateway_proc.url
    ctx.stack.wait_ready()
    direct_meter = {"engine": engine_proc} if engine_proc else {}
    gateway_meter = dict(direct_meter) | ({"gateway": gateway_proc} if gateway_proc else {})
    return engine_url, gateway_url, direct_meter, gateway_meter


def raise_missing(role: str) -> None:
    from lorafleet.benchmarks.scenarios.base import ScenarioError

    raise ScenarioError(
        f"--target gateway=... also needs --target {role}=... (the engine behind it)"
    )


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    engine_url, gateway_url, direct_meter, gateway_meter = setup(ctx)
    model = ctx.options.served_model_name
    arms: list[Arm] = []
    comparisons: list[dict[str, Any]] = []
    headline: list[dict[str, Any]] = []
    for concurrency in [int(c) for c in args.concurrencies.split(",")]:
        single = concurrency == 1
        workload = Workload(
            num_requests=args.single_requests if single else args.requests_per_slot * concurrency,
            input_len=args.input_len,
            output_len=args.single_output_len if single else args.output_len,
            concurrency=concurrency,
        )
        direct = Arm(f"direct c={concurrency}", engine_url, model, workload, metered=direct_meter)
        gateway = Arm(
            f"gateway c={concurrency}", gateway_url, model, workload, metered=gateway_meter
        )
        ctx.run_arms([direct, gateway])
        arms += [direct, gateway]
        comps, rows = compare_pair(gateway, direct, concurrency, workload.describe())
        comparisons += comps
        headline += rows
    return ctx.result(arms=arms, comparisons=comparisons, headline=headline)


def compare_pair(
    gateway: Arm, direct: Arm, concurrency: int, workload: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    c = concurrency
    ttft50 = compare(
        f"added TTFT p50, c={c}",
        gateway,
        direct,
        "median_ttft_ms",
        "delta",
        bar="<= 2 ms" if c == 1 else None,
        passes=(lambda v: v <= 2.0) if c == 1 else None,
    )
    ttft99 = compare(
        f"added TTFT p99, c={c}",
        gateway,
        direct,
        "p99_ttft_ms",
        "delta",
        bar="<= 10 ms" if c == 1 else None,
        passes=(lambda v: v <= 10.0) if c == 1 else None,
    )
    itl50 = compare(f"added ITL p50, c={c}", gateway, direct, "median_itl_ms", "delta")
    itl99 = compare(f"added ITL p99, c={c}", gateway, direct, "p99_itl_ms", "delta")
    chunks = compare(
        f"chunks per request ratio, c={c}",
        gateway,
        direct,
        "mean_chunks_per_request",
        "ratio",
        bar="== 1 (no coalescing)",
        passes=lambda v: abs(v - 1.0) < 0.01,
    )
    big = c >= 32
    throughput = compare(
        f"output throughput ratio, c={c}",
        gateway,
        direct,
        "output_throughput",
        "ratio",
        bar=">= 0.95" if big else None,
        passes=(lambda v: v >= 0.95) if big else None,
    )
    comparisons = [ttft50, ttft99, itl50, itl99, chunks, throughput]
    rows = []
    if c == 1:
        rows += [
            headline_row("gateway added TTFT p50 (c=1, streaming)", ttft50, "ms", workload),
            headline_row("gateway added TTFT p99 (c=1, streaming)", ttft99, "ms", workload),
        ]
    if big:
        rows.append(
            headline_row(
                f"gateway / direct vLLM output throughput (c={c})", throughput, "x", workload
            )
        )
    cpu = gateway.as_dict()["summary"].get("gateway_cpu_s_per_1k_output_tokens")
    if cpu and big:
        rows.append(
            headline_row(
                f"gateway CPU per 1k output tokens (c={c})", cpu["median"], "CPU-s", workload
            )
        )
    return comparisons, rows  # fmt: skip
