"""`gateway-overhead`: the same load straight to vLLM and through the lorafleet gateway.

    lorafleet bench gateway-overhead                          # starts a vLLM engine + gateway
    lorafleet bench gateway-overhead --target engine=http://127.0.0.1:8300 \
                                     --target gateway=http://127.0.0.1:8301

Roles: `engine` (bare vLLM), `gateway` (lorafleet fronting that same engine). At each concurrency
the two arms run back to back, alternating order each repeat. Reports added TTFT p50/p99, ITL
(and chunks per request: the gateway must not coalesce), the throughput ratio, and the gateway's
CPU seconds per 1k output tokens (when the benchmark started it).

On a busy machine the engine's own jitter is far larger than a few milliseconds, so the same pair
of arms also runs against a fake engine (`fake_server.py`: fixed TTFT and token gap, no model)
behind a second gateway: there the difference is the gateway alone. At high concurrency the fake
streams far more tokens per second than a CPU engine, which shows the gateway's relay capacity.
"""

from __future__ import annotations

import argparse
from typing import Any

from lorafleet.benchmarks.processes import (
    ManagedProcess,
    fake_engine,
)
from lorafleet.benchmarks.scenarios.base import (
    Arm,
    BenchContext,
    ScenarioError,
    Workload,
    compare,
    headline_row,
    positive_ints,
)

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
    parser.add_argument(
        "--no-fake", dest="fake", action="store_false", help="skip the fake-engine arms"
    )
    parser.add_argument("--fake-ttft-ms", type=float, default=50.0)
    parser.add_argument("--fake-itl-ms", type=float, default=20.0)
    parser.add_argument("--fake-concurrencies", default="1,64")


class Pair:
    """An upstream and the gateway in front of it, with the processes whose CPU to meter."""

    def __init__(
        self,
        upstream: str,
        gateway: str,
        upstream_proc: ManagedProcess | None,
        gateway_proc: ManagedProcess | None,
    ) -> None:
        self.upstream, self.gateway = upstream, gateway
        self.direct_meter = {"engine": upstream_proc} if upstream_proc else {}
        self.gateway_meter = self.direct_meter | ({"gateway": gateway_proc} if gateway_proc else {})


def real_pair(ctx: BenchContext) -> Pair:
    engine_url, gateway_url = ctx.given("engine"), ctx.given("gateway")
    if gateway_url and not engine_url:
        raise ScenarioError("--target gateway=... also needs --target engine=... (behind it)")
    engine = gateway = None
    if not engine_url:
        engine = ctx.start_engine()
        ctx.stack.wait_ready([engine])
        engine_url = engine.url
    if not gateway_url:
        gateway = ctx.start_gateway([engine_url])
        gateway_url = gateway.url
    return Pair(engine_url, gateway_url, engine, gateway)


def fake_pair(ctx: BenchContext, args: argparse.Namespace) -> Pair:
    spec = fake_engine(
        ctx.port(),
        ttft_ms=args.fake_ttft_ms,
        itl_ms=args.fake_itl_ms,
        served_model_name=ctx.options.served_model_name,
    )
    fake = ctx.stack.start(spec)
    ctx.started("fake-engine", fake)
    ctx.stack.wait_ready([fake])
    gateway = ctx.start_gateway([fake.url], name="gateway-to-fake")
    return Pair(fake.url, gateway.url, fake, gateway)


def workload_for(args: argparse.Namespace, concurrency: int) -> Workload:
    single = concurrency == 1
    return Workload(
        num_requests=args.single_requests if single else args.requests_per_slot * concurrency,
        input_len=args.input_len,
        output_len=args.single_output_len if single else args.output_len,
        concurrency=concurrency,
    )


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    pairs = [("", real_pair(ctx), positive_ints(args.concurrencies, "--concurrencies"))]
    if args.fake:
        pairs.append(
            (
                "fake ",
                fake_pair(ctx, args),
                positive_ints(args.fake_concurrencies, "--fake-concurrencies"),
            )
        )
    model = ctx.options.served_model_name
    arms: list[Arm] = []
    comparisons: list[dict[str, Any]] = []
    headline: list[dict[str, Any]] = []
    for prefix, pair, levels in pairs:
        for concurrency in levels:
            workload = workload_for(args, concurrency)
            direct = Arm(
                f"direct {prefix}c={concurrency}",
                pair.upstream,
                model,
                workload,
                metered=pair.direct_meter,
            )
            gateway = Arm(
                f"gateway {prefix}c={concurrency}",
                pair.gateway,
                model,
                workload,
                metered=pair.gateway_meter,
            )
            ctx.run_arms([direct, gateway])
            arms += [direct, gateway]
            comps, rows = compare_pair(
                gateway, direct, concurrency, workload.describe(), fake=bool(prefix)
            )
            comparisons += comps
            headline += rows
    if args.fake:
        ctx.notes.append(
            f"Fake engine: {args.fake_ttft_ms:g} ms TTFT, {args.fake_itl_ms:g} ms between tokens, "
            "no model; 'gateway fake' arms isolate the gateway's own latency and relay capacity "
            "from engine jitter."
        )
    return ctx.result(arms=arms, comparisons=comparisons, headline=headline)


def compare_pair(
    gateway: Arm, direct: Arm, c: int, workload: str, *, fake: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tag = f"{'fake engine, ' if fake else ''}c={c}"
    single, big = c == 1, c >= 32
    ttft50 = compare(
        f"added TTFT p50, {tag}",
        gateway,
        direct,
        "median_ttft_ms",
        "delta",
        bar="<= 2 ms" if single else None,
        passes=(lambda v: v <= 2.0) if single else None,
    )
    ttft99 = compare(
        f"added TTFT p99, {tag}",
        gateway,
        direct,
        "p99_ttft_ms",
        "delta",
        bar="<= 10 ms" if single else None,
        passes=(lambda v: v <= 10.0) if single else None,
    )
    itl50 = compare(f"added ITL p50, {tag}", gateway, direct, "median_itl_ms", "delta")
    itl99 = compare(f"added ITL p99, {tag}", gateway, direct, "p99_itl_ms", "delta")
    chunks = compare(
        f"chunks per request ratio, {tag}",
        gateway,
        direct,
        "mean_chunks_per_request",
        "ratio",
        bar="== 1 (no coalescing)",
        passes=lambda v: abs(v - 1.0) < 0.01,
    )
    throughput = compare(
        f"output throughput ratio, {tag}",
        gateway,
        direct,
        "output_throughput",
        "ratio",
        bar=">= 0.95" if big else None,
        passes=(lambda v: v >= 0.95) if big else None,
    )
    where = "vs a fake engine (gateway alone)" if fake else "vs direct vLLM"
    rows = []
    if single:
        rows += [
            headline_row(
                f"gateway added TTFT p50 (c=1, streaming) {where}", ttft50, "ms", workload
            ),
            headline_row(
                f"gateway added TTFT p99 (c=1, streaming) {where}", ttft99, "ms", workload
            ),
            headline_row(f"gateway added ITL p50 (c=1) {where}", itl50, "ms", workload),
        ]
    if big:
        rows.append(
            headline_row(
                f"gateway / direct output throughput (c={c}) {where}", throughput, "x", workload
            )
        )
        cpu = gateway.as_dict()["summary"].get("gateway_cpu_s_per_1k_output_tokens")
        if cpu:
            rows.append(
                headline_row(
                    f"gateway CPU-seconds per 1k output tokens (c={c}) {where}",
                    cpu["median"],
                    "s",
                    workload,
                )
            )
    return [ttft50, ttft99, itl50, itl99, chunks, throughput], rows
