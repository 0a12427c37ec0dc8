"""`load`: one load shape against any OpenAI-compatible endpoint (like `vllm bench serve`).

    lorafleet bench load --target server=http://127.0.0.1:8000 -c 16 --num-prompts 64
    lorafleet bench load --target server=http://127.0.0.1:8000 --request-rate 2 --burstiness 0.5
    lorafleet bench load --target server=http://127.0.0.1:8000 --adapters a,b \
        --adapter-assignment random
    lorafleet bench load --target server=https://api.openai.com --model gpt-4o-mini \
        --endpoint chat \
        --dataset chat-file --dataset-path prompts.jsonl --no-ignore-eos --repeats 1

Role: `server` (required). Writes the same result.json/summary.md/plots as the scenarios, and a
per-run JSON in vLLM's layout under runs/.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from lorafleet.benchmarks.scenarios.base import Arm, BenchContext, ScenarioError, Workload

NAME = "load"
HELP = "one load shape against any OpenAI endpoint (closed or open loop)"
DEFAULTS = {"repeats": 1, "warmup": 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="model to request (default: --served-model-name)"
    )
    parser.add_argument(
        "-c", "--concurrency", type=int, default=None, help="closed loop: requests in flight"
    )
    parser.add_argument(
        "--request-rate", type=float, default=math.inf, help="open loop: requests/s"
    )
    parser.add_argument("--burstiness", type=float, default=1.0, help="gamma shape (1 = Poisson)")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--output-range-ratio", type=float, default=0.0)
    parser.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    parser.add_argument("--dataset", choices=["random", "chat-file"], default="random")
    parser.add_argument("--dataset-path", type=Path, default=None)
    parser.add_argument(
        "--adapters", default="", help="comma list of adapter names to spread requests over"
    )
    parser.add_argument(
        "--adapter-assignment", choices=["round-robin", "random"], default="round-robin"
    )


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    url = ctx.given("server")
    if not url:
        raise ScenarioError("`load` needs --target server=URL")
    if args.concurrency is None and math.isinf(args.request_rate):
        raise ScenarioError("give --concurrency (closed loop) or --request-rate (open loop)")
    workload = Workload(
        num_requests=args.num_prompts,
        input_len=args.input_len,
        output_len=args.output_len,
        output_range_ratio=args.output_range_ratio,
        concurrency=args.concurrency,
        request_rate=args.request_rate,
        burstiness=args.burstiness,
        endpoint=args.endpoint,
        dataset=args.dataset,
        dataset_path=args.dataset_path,
    )
    adapters = tuple(a for a in args.adapters.split(",") if a)
    arm = Arm(
        "load",
        url,
        args.model or ctx.options.served_model_name,
        workload,
        adapters=adapters,
        adapter_assignment=args.adapter_assignment,
    )
    ctx.run_arms([arm])
    return ctx.result(arms=[arm], comparisons=[], headline=[])
