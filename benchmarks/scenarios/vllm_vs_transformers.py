"""`vllm-vs-transformers`: vLLM (through the gateway) against naive Hugging Face serving.

    lorafleet bench vllm-vs-transformers
    lorafleet bench vllm-vs-transformers --target vllm=http://127.0.0.1:8000 \
        --target hf=http://127.0.0.1:8310 --target hf-batch=http://127.0.0.1:8311

Roles: `vllm` (an OpenAI endpoint backed by vLLM; by default the benchmark starts an engine, or
uses the `engine` given, and the gateway in front of it), `hf` (`benchmarks/hf_server.py`, one
request at a time) and `hf-batch` (the same server with static batches). Two comparisons, each
run back to back:
1. fixed-length outputs at high concurrency: vLLM vs `generate()` one request at a time;
2. mixed output lengths: vLLM vs static batches (a batch runs until its longest request ends).
"""

from __future__ import annotations

import argparse
from typing import Any

from lorafleet.benchmarks.processes import hf_server
from lorafleet.benchmarks.scenarios.base import Arm, BenchContext, Workload, compare, headline_row

NAME = "vllm-vs-transformers"
HELP = "vLLM via the gateway vs Hugging Face generate() one at a time and in static batches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=64, help="clients for comparison 1")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument(
        "--output-len", type=int, default=32, help="fixed output length, comparison 1"
    )
    parser.add_argument(
        "--vllm-requests", type=int, default=128, help="requests per vLLM run, comparison 1"
    )
    parser.add_argument(
        "--hf-requests", type=int, default=12, help="requests per one-at-a-time HF run"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="static batch size of the HF baseline"
    )
    parser.add_argument(
        "--mixed-requests", type=int, default=64, help="requests per run, comparison 2"
    )
    parser.add_argument(
        "--mixed-output-len", type=int, default=48, help="mean output length, comparison 2"
    )
    parser.add_argument(
        "--mixed-range-ratio", type=float, default=0.66, help="output lengths len*(1±r)"
    )
    parser.add_argument("--skip-batch", action="store_true", help="only comparison 1")
    parser.add_argument("--direct", action="store_true", help="measure bare vLLM (no gateway)")
    parser.add_argument(
        "--hf-threads",
        type=int,
        default=None,
        help="torch threads of the HF servers (default: all)",
    )


def setup(ctx: BenchContext, args: argparse.Namespace) -> dict[str, str]:
    """URLs for roles vllm, hf, hf-batch; HF servers load while the engine starts."""
    urls: dict[str, str] = {}
    vllm_url, engine_url = ctx.given("vllm"), ctx.given("engine")
    engine = None if vllm_url or engine_url else ctx.start_engine()
    for role, batch in (("hf", 1), ("hf-batch", args.batch_size)):
        if role == "hf-batch" and args.skip_batch:
            continue
        url = ctx.given(role)
        if not url:
            name = ctx.options.served_model_name
            spec = hf_server(
                ctx.model_dir(),
                ctx.port(),
                served_model_name=name,
                batch_size=batch,
                threads=args.hf_threads,
                name=role,
            )
            url = ctx.started(role, ctx.stack.start(spec)).url
        urls[role] = url
    if engine is not None:
        ctx.stack.wait_ready([engine])
        engine_url = engine.url
    if not vllm_url and engine_url:
        vllm_url = engine_url if args.direct else ctx.start_gateway([engine_url]).url
    ctx.stack.wait_ready()
    urls["vllm"] = str(vllm_url)
    return urls


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    urls = setup(ctx, args)
    model = ctx.options.served_model_name
    via = "direct" if args.direct else "gateway"
    fixed = Workload(
        num_requests=args.vllm_requests,
        input_len=args.input_len,
        output_len=args.output_len,
        concurrency=args.concurrency,
    )
    hf_fixed = Workload(
        num_requests=args.hf_requests,
        input_len=args.input_len,
        output_len=args.output_len,
        concurrency=args.concurrency,
    )
    vllm_arm = Arm(f"vllm-{via} c={args.concurrency}", urls["vllm"], model, fixed)
    hf_arm = Arm(f"hf-one-at-a-time c={args.concurrency}", urls["hf"], model, hf_fixed)
    ctx.run_arms([vllm_arm, hf_arm])
    arms = [vllm_arm, hf_arm]
    single = compare(
        "vLLM / HF one-at-a-time output tok/s",
        vllm_arm,
        hf_arm,
        "output_throughput",
        bar=">= 8x",
        passes=lambda v: v >= 8.0,
    )
    comparisons = [single]
    headline = [
        headline_row(
            f"vLLM via {via} / HF generate() one at a time, output tok/s (c={args.concurrency})",
            single,
            "x",
            fixed.describe(),
        )
    ]
    if not args.skip_batch:
        mixed = Workload(
            num_requests=args.mixed_requests,
            input_len=args.input_len,
            output_len=args.mixed_output_len,
            output_range_ratio=args.mixed_range_ratio,
            concurrency=args.batch_size,
        )
        vllm_mixed = Arm(f"vllm-{via} mixed c={args.batch_size}", urls["vllm"], model, mixed)
        hf_batch = Arm(
            f"hf-static-batch{args.batch_size} mixed c={args.batch_size}",
            urls["hf-batch"],
            model,
            mixed,
        )
        ctx.run_arms([vllm_mixed, hf_batch])
        arms += [vllm_mixed, hf_batch]
        batch = compare(
            f"vLLM / HF static batches of {args.batch_size} output tok/s",
            vllm_mixed,
            hf_batch,
            "output_throughput",
            bar=">= 1.3x",
            passes=lambda v: v >= 1.3,
        )
        comparisons.append(batch)
        headline.append(
            headline_row(
                f"vLLM via {via} / HF static batches of {args.batch_size}, mixed output lengths",
                batch,
                "x",
                mixed.describe(),
            )
        )
    threads = args.hf_threads or "all usable"
    ctx.notes.append(
        f"HF baseline: transformers generate() in fp32 with {threads} torch thread(s), greedy, "
        "KV cache on; the vLLM engine uses the same cores (VLLM_CPU_OMP_THREADS_BIND). Servers "
        "not under test sit idle."
    )
    return ctx.result(arms=arms, comparisons=comparisons, headline=headline)
