"""`sweep`: the throughput-latency curve, over concurrency levels (closed loop) or request rates.

    lorafleet bench sweep                                   # c = 1..64 through the gateway
    lorafleet bench sweep --via engine --concurrencies 1,4,16,64
    lorafleet bench sweep --rates 0.5,1,2,4 --burstiness 1  # open loop, Poisson arrivals
    lorafleet bench sweep --target server=https://api.example.com --model m --no-ignore-eos

Roles: `server` (any OpenAI endpoint, used as is), or `engine` (a bare vLLM the benchmark puts
its gateway in front of); by default an engine + gateway this benchmark starts.
At c=1 it also reports single-stream decode speed (1 / TPOT) against the memory-bandwidth
roofline (weights bytes per token; bandwidth measured here or given with --mem-bandwidth-gbs).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from lorafleet.benchmarks import membw
from lorafleet.benchmarks.scenarios.base import (
    Arm,
    BenchContext,
    Workload,
    headline_row,
    positive_ints,
)

NAME = "sweep"
HELP = "throughput-latency curve over concurrency (or request rate)"
DEFAULTS = {"repeats": 1}  # a curve, not a comparison: one run per point unless asked
KEYS = (
    "output_throughput",
    "max_output_tokens_per_s",
    "request_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "median_e2el_ms",
    "failed",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", choices=["gateway", "engine"], default="gateway")
    parser.add_argument(
        "--model", default=None, help="model to request (default: --served-model-name)"
    )
    parser.add_argument("--concurrencies", default="1,2,4,8,16,32,64")
    parser.add_argument(
        "--rates", default=None, help="open loop: comma list of request rates (req/s)"
    )
    parser.add_argument(
        "--burstiness", type=float, default=1.0, help="gamma shape for --rates (1 = Poisson)"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="cap on in-flight requests with --rates"
    )
    parser.add_argument(
        "--requests-per-slot", type=int, default=2, help="requests per level = max(min, this * c)"
    )
    parser.add_argument("--min-requests", type=int, default=8)
    parser.add_argument(
        "--seconds-per-rate", type=float, default=30.0, help="open loop: requests = rate * this"
    )
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    parser.add_argument("--dataset", choices=["random", "chat-file"], default="random")
    parser.add_argument("--dataset-path", type=Path, default=None, help="JSONL of chat prompts")
    parser.add_argument(
        "--mem-bandwidth-gbs", type=float, default=None, help="skip measuring bandwidth"
    )


def start_server(ctx: BenchContext, args: argparse.Namespace) -> str:
    """The `server` URL given, else an engine (and, unless --via engine, a gateway) started."""
    url = ctx.given("server")
    if url:
        return url
    engine_url = ctx.given("engine")
    if not engine_url:
        engine = ctx.start_engine()
        ctx.stack.wait_ready([engine])
        engine_url = engine.url
    return engine_url if args.via == "engine" else ctx.start_gateway([engine_url]).url


def _workloads(args: argparse.Namespace) -> list[tuple[float, Workload]]:
    common = {
        "input_len": args.input_len,
        "output_len": args.output_len,
        "endpoint": args.endpoint,
        "dataset": args.dataset,
        "dataset_path": args.dataset_path,
    }
    if args.rates:
        return [
            (
                rate,
                Workload(
                    num_requests=max(args.min_requests, math.ceil(rate * args.seconds_per_rate)),
                    concurrency=args.max_concurrency,
                    request_rate=rate,
                    burstiness=args.burstiness,
                    **common,
                ),
            )
            for rate in (float(r) for r in args.rates.split(","))
        ]
    return [
        (
            c,
            Workload(
                num_requests=max(args.min_requests, args.requests_per_slot * c),
                concurrency=c,
                **common,
            ),
        )
        for c in positive_ints(args.concurrencies, "--concurrencies")
    ]


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    url = start_server(ctx, args)
    model = args.model or ctx.options.served_model_name
    arms = []
    for x, workload in _workloads(args):
        label = f"rate={x:g}/s" if args.rates else f"c={int(x)}"
        arm = Arm(label, url, model, workload)
        ctx.run_arms([arm])
        arms.append((x, arm))
    points: list[dict[str, Any]] = []
    for x, arm in arms:
        summary = arm.as_dict()["summary"]
        points.append(
            {"x": x, "arm": arm.name}
            | {key: summary[key]["median"] for key in KEYS if key in summary}
        )
    best = max(points, key=lambda p: p["output_throughput"])
    via = "a given server" if "server" in ctx.options.targets else args.via
    desc = f"in={args.input_len} out={args.output_len} tok, {args.endpoint}, via {via}"
    headline = [
        headline_row(
            f"peak sustained output tok/s ({best['arm']})", best["output_throughput"], "tok/s", desc
        )
    ]
    extra: dict[str, Any] = {
        "sweep": {
            "points": points,
            "x_label": "request rate (req/s)" if args.rates else "concurrency",
            "target": url,
        },
    }
    single = next((p for p in points if p["x"] == 1 and not args.rates), None)
    if single and single.get("median_tpot_ms"):
        roofline = _roofline(ctx, args, 1000.0 / single["median_tpot_ms"])
        extra["single_stream"] = roofline
        if "efficiency" in roofline:
            headline.append(
                headline_row(
                    "single-stream decode vs memory-bandwidth roofline",
                    roofline["efficiency"] * 100,
                    "%",
                    f"c=1, {desc}",
                    bar=">= 40%",
                    meets_bar=roofline["efficiency"] >= 0.4,
                )
            )
    return ctx.result(arms=[arm for _, arm in arms], comparisons=[], headline=headline, extra=extra)


def _roofline(ctx: BenchContext, args: argparse.Namespace, decode_tok_s: float) -> dict[str, Any]:
    data: dict[str, Any] = {"decode_tok_s": decode_tok_s, "method": "1000 / median TPOT at c=1"}
    try:
        weights = membw.weight_bytes(ctx.model_dir())
    except Exception as exc:  # no local model: no roofline, the curve stands on its own
        ctx.notes.append(f"no roofline: model weights not found locally ({exc})")
        return data
    if args.mem_bandwidth_gbs:
        bandwidth, how = args.mem_bandwidth_gbs, "given with --mem-bandwidth-gbs"
    else:
        measured = membw.measure()
        if "gb_per_s" not in measured:
            ctx.notes.append(f"no roofline: bandwidth measurement failed: {measured.get('error')}")
            return data
        bandwidth, how = (
            float(str(measured["gb_per_s"])),
            f"measured: {measured['method']} (busy machine: a lower bound)",
        )
    roofline = bandwidth * 1e9 / weights
    data |= {
        "weight_bytes": weights,
        "bandwidth_gb_s": bandwidth,
        "bandwidth_method": how,
        "roofline_tok_s": roofline,
        "efficiency": decode_tok_s / roofline,
    }
    ctx.notes.append(
        f"Single stream: {decode_tok_s:.1f} tok/s decode vs roofline {roofline:.1f} tok/s "
        f"({weights / 1e6:.0f} MB of weights per token at {bandwidth:.1f} GB/s, {how})."
    )
    return data


def plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from lorafleet.benchmarks.plots import plot_arm_latency, plot_sweep

    return [
        plot_sweep(result, out_dir / "sweep.png"),
        plot_arm_latency(result, out_dir / "latency.png", metrics=("ttft", "tpot")),
    ]
