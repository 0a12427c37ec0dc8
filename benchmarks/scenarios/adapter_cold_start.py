"""`adapter-cold-start`: the first request to an adapter that is not loaded yet, against warm.

    lorafleet bench adapter-cold-start                 # through the gateway (registers adapters)
    lorafleet bench adapter-cold-start --via engine    # /v1/load_lora_adapter, then a request

Per repeat, with fresh adapters each time (rank --rank, local disk):
1. base-model TTFT (reference) and one adapter's first-request TTFT, then its warm TTFT;
   via the engine the load call's time is added to the first request (a client would wait for
   both); via the gateway the first request itself triggers the load.
2. a herd: --herd clients hit a second fresh adapter at the same moment, then again warm;
3. the engine's own /v1/load_lora_adapter call for a third fresh adapter, timed alone.
Extra cold TTFT = first-request TTFT (+ load call) - warm TTFT of the same adapter.

Roles: `lora-engine` (vLLM with --enable-lora), `gateway` (lorafleet in front of it).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from lorafleet.benchmarks.loadgen import LoadResult
from lorafleet.benchmarks.lora_adapters import DEFAULT_TARGETS, make_adapters
from lorafleet.benchmarks.metrics import percentile
from lorafleet.benchmarks.scenarios.base import (
    Arm,
    BenchContext,
    ScenarioError,
    Workload,
    headline_row,
)
from lorafleet.benchmarks.scenarios.lora_overhead import load_into_engine, register_via_gateway
from lorafleet.benchmarks.stats import spread

NAME = "adapter-cold-start"
HELP = "first-request TTFT of an adapter not yet loaded vs warm; a herd on one cold adapter"
DEFAULTS = {"repeats": 5}  # one cold sample per repeat: more repeats than the throughput arms"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", choices=["gateway", "engine"], default="gateway")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help="target modules, or all-linear"
    )
    parser.add_argument("--max-loras", type=int, default=4)
    parser.add_argument(
        "--herd", type=int, default=16, help="clients hitting one cold adapter at once"
    )
    parser.add_argument("--warm-requests", type=int, default=5)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=4)


class Loader:
    """Makes an adapter servable: registers it at the gateway or loads it into the engine."""

    def __init__(self, via: str, url: str, base_model: str) -> None:
        self.via, self.url, self.base_model = via, url, base_model

    def make_ready(self, name: str, path: Path) -> float:
        started = time.perf_counter()
        if self.via == "gateway":
            register_via_gateway(self.url, [(name, path)], self.base_model)
        else:
            load_into_engine(self.url, [(name, path)])
        return time.perf_counter() - started

    def remove(self, name: str) -> None:
        if self.via == "gateway":
            httpx.delete(f"{self.url}/v1/adapters/{name}", timeout=60.0)
        else:
            httpx.post(f"{self.url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60.0)


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    targets = ("all-linear",) if args.targets == "all-linear" else tuple(args.targets.split(","))
    count = 3 * ctx.options.repeats
    print(f"[bench] creating {count} rank-{args.rank} adapters in {ctx.adapter_dir}")
    adapters = make_adapters(
        ctx.model_dir(), ctx.adapter_dir, count, args.rank, targets, ctx.options.seed, tag=ctx.tag
    )
    url, engine_url = _setup(ctx, args)
    return _measure(ctx, args, url, engine_url, adapters)


def _setup(ctx: BenchContext, args: argparse.Namespace) -> tuple[str, str]:
    """(URL the requests go to, URL of the vLLM engine)."""
    engine_url = ctx.given("lora-engine")
    if not engine_url:
        options = replace(
            ctx.options.engine, enable_lora=True, max_loras=args.max_loras, max_lora_rank=args.rank
        )
        engine = ctx.start_engine(options, name="lora-engine")
        ctx.stack.wait_ready([engine])
        engine_url = engine.url
    if args.via == "engine":
        return engine_url, engine_url
    return ctx.given("gateway") or ctx.start_gateway([engine_url]).url, engine_url


def _ttfts(result: LoadResult) -> list[float]:
    failed = [r.error for r in result.records if not r.success]
    if failed:
        raise ScenarioError(f"requests failed during the cold-start measurement: {failed[0]}")
    return [r.ttft * 1000.0 for r in result.records]


def _load(
    ctx: BenchContext, url: str, model: str, workload: Workload, seed: int, label: str
) -> list[float]:
    arm = Arm(label, url, model, workload)
    config = ctx.load_config(arm, seed, label)
    return _ttfts(ctx.execute(config, ctx.requests(workload, seed)))


def _measure(
    ctx: BenchContext,
    args: argparse.Namespace,
    url: str,
    engine_url: str,
    adapters: list[tuple[str, Path]],
) -> dict[str, Any]:
    loader = Loader(args.via, url, ctx.options.served_model_name)
    engine = Loader("engine", engine_url, ctx.options.served_model_name)
    base = ctx.options.served_model_name
    single = Workload(
        num_requests=1, input_len=args.input_len, output_len=args.output_len, concurrency=1
    )
    warm = replace(single, num_requests=args.warm_requests)
    herd = replace(single, num_requests=args.herd, concurrency=args.herd)
    _load(ctx, url, base, replace(single, num_requests=4), ctx.options.seed + 5, "warm-up")
    rows: list[dict[str, Any]] = []
    for repeat in range(ctx.options.repeats):
        seed = ctx.options.seed + 1000 * (repeat + 1)
        (one, one_path), (many, many_path), (probe, probe_path) = adapters[
            3 * repeat : 3 * repeat + 3
        ]
        base_ttft = percentile(_load(ctx, url, base, warm, seed, "base"), 50)
        ready_s = loader.make_ready(one, one_path)
        cold = _load(ctx, url, one, single, seed + 1, f"cold {one}")[0]
        warm_ttft = percentile(_load(ctx, url, one, warm, seed + 2, f"warm {one}"), 50)
        ready_many_s = loader.make_ready(many, many_path)
        herd_cold = _load(ctx, url, many, herd, seed + 3, f"herd cold {many}")
        herd_warm = _load(ctx, url, many, herd, seed + 4, f"herd warm {many}")
        engine_load_s = engine.make_ready(probe, probe_path)  # the engine's load, timed alone
        engine.remove(probe)
        first = cold + (ready_s * 1000.0 if args.via == "engine" else 0.0)
        herd_first = [
            t + (ready_many_s * 1000.0 if args.via == "engine" else 0.0) for t in herd_cold
        ]
        row = {
            "repeat": repeat + 1,
            "adapter": one,
            "base warm TTFT p50": base_ttft,
            "make-ready call": ready_s * 1000.0,
            "engine load_lora_adapter call": engine_load_s * 1000.0,
            "cold first-request TTFT": first,
            "adapter warm TTFT p50": warm_ttft,
            "cold extra TTFT": first - warm_ttft,
            "warm adapter - base TTFT": warm_ttft - base_ttft,
            f"herd of {args.herd}: cold TTFT p50": percentile(herd_first, 50),
            f"herd of {args.herd}: cold TTFT max": max(herd_first),
            f"herd of {args.herd}: warm TTFT p50": percentile(herd_warm, 50),
            f"herd of {args.herd}: warm TTFT max": max(herd_warm),
            f"herd of {args.herd}: cold - warm TTFT p50": percentile(herd_first, 50)
            - percentile(herd_warm, 50),
        }
        rows.append(row)
        print(
            f"[bench] cold start r{repeat + 1}: extra {row['cold extra TTFT']:.0f} ms, "
            f"herd max {row[f'herd of {args.herd}: cold TTFT max']:.0f} ms"
        )
        for name in (one, many):
            loader.remove(name)
    keys = [key for key in rows[0] if key not in ("repeat", "adapter")]
    summary = {key: spread([float(row[key]) for row in rows]) for key in keys}
    extra = summary["cold extra TTFT"]
    workload = (
        f"rank {args.rank} on {args.targets}, local disk, via {args.via}; "
        f"in={args.input_len} out={args.output_len}, c=1"
    )
    comparison = {
        "name": "cold adapter extra TTFT",
        "a": "cold first request",
        "b": "warm",
        "key": "ttft_ms",
        "how": "delta",
        "value": extra["median"],
        "per_repeat": [row["cold extra TTFT"] for row in rows],
        "min": extra["min"],
        "max": extra["max"],
        "bar": "< 300 ms",
        "meets_bar": extra["median"] < 300.0,
    }
    herd_key = f"herd of {args.herd}: cold - warm TTFT p50"
    headline = [
        headline_row("cold adapter extra TTFT (first request vs warm)", comparison, "ms", workload),
        headline_row(
            f"engine load_lora_adapter call alone (rank {args.rank}, local disk)",
            summary["engine load_lora_adapter call"]["median"],
            "ms",
            workload,
        ),
        headline_row(
            f"{args.herd} clients at once on one cold adapter: extra TTFT p50 (cold - warm herd)",
            summary[herd_key]["median"],
            "ms",
            workload.replace("c=1", f"c={args.herd}"),
        ),
    ]
    table = ["| measure (ms) | median | min | max |", "|---|---|---|---|"]
    table += [
        f"| {key} | {s['median']:.1f} | {s['min']:.1f} | {s['max']:.1f} |"
        for key, s in summary.items()
    ]
    if args.via == "engine":
        ctx.notes.append(
            "Via the engine: 'cold first-request TTFT' = /v1/load_lora_adapter call + the first "
            "request's TTFT."
        )
    else:
        ctx.notes.append(
            "Via the gateway: 'make-ready call' is POST /v1/adapters; the first request triggers "
            "the engine load."
        )
    result = ctx.result(arms=[], comparisons=[comparison], headline=headline)
    result["cold_start"] = {"per_repeat": rows, "summary": summary}
    result["extra_sections"] = [
        {"title": "Cold start (per repeat, fresh adapters)", "lines": table}
    ]
    return result


def plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from lorafleet.benchmarks.plots import plot_cold_start

    return [plot_cold_start(result, out_dir / "cold_start.png")]
