"""`cost`: dollars per 1M tokens from a measured sustained throughput, against API list prices.

    lorafleet bench cost                                   # measures: c=64, 3:1 input:output
    lorafleet bench cost --from path/to/result.json --arm "c=64"
    lorafleet bench cost --machine h100-sxm --dollars-per-hour 2.99 --target server=http://gpu-box:8000

    $ per 1M tokens = machine $/hour / (sustained tok/s * 3600) * 1e6 / utilization

Output-token and blended (3 input : 1 output) prices at 100% and 40% utilization, beside every
API in the price table (lorafleet/prices.yaml, or --prices). The machine price comes from the
table (--machine) unless --dollars-per-hour overrides it. Roles: `server` (default: engine +
gateway started here) or `engine` (a vLLM to put the gateway in front of). The model's quality
is stated beside the prices: cheaper is not equal.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from lorafleet.benchmarks.cost import PriceTableError, cost_report, load_price_table
from lorafleet.benchmarks.scenarios import sweep
from lorafleet.benchmarks.scenarios.base import (
    Arm,
    BenchContext,
    ScenarioError,
    Workload,
    headline_row,
)

NAME = "cost"
HELP = "$ per 1M output and blended tokens at 100%%/40%% utilization vs API prices"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        help="price an existing result.json instead of measuring",
    )
    parser.add_argument(
        "--arm", default=None, help="with --from: which arm (default: highest output tok/s)"
    )
    parser.add_argument("--machine", default="cpu-2vcpu-vm", help="machine id in the price table")
    parser.add_argument(
        "--dollars-per-hour", type=float, default=None, help="your own machine price"
    )
    parser.add_argument(
        "--prices",
        type=Path,
        default=None,
        help="price table YAML (default: lorafleet/prices.yaml)",
    )
    parser.add_argument("--utilizations", default="1.0,0.4")
    parser.add_argument("--via", choices=["gateway", "engine"], default="gateway")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument(
        "--input-len", type=int, default=96, help="3:1 with --output-len for the blended price"
    )
    parser.add_argument("--output-len", type=int, default=32)


def _measured(ctx: BenchContext, args: argparse.Namespace) -> tuple[dict[str, Any], str, list[Arm]]:
    """(arm summary, workload description, arms run here)."""
    if args.source:
        data = orjson.loads(args.source.read_bytes())
        arms = data.get("arms") or {}
        if not arms:
            raise ScenarioError(f"{args.source} has no arms to price")
        name = args.arm or max(
            arms, key=lambda n: arms[n]["summary"]["output_throughput"]["median"]
        )
        if name not in arms:
            raise ScenarioError(f"{args.source} has no arm {name!r} (has: {', '.join(arms)})")
        ctx.notes.append(
            f"Throughput from {args.source} (arm {name!r}, measured {data.get('date')})."
        )
        ctx.environment["priced_run"] = {
            "source": str(args.source),
            "arm": name,
            "date": data.get("date"),
            "machine": data.get("machine"),
        }
        return arms[name]["summary"], arms[name]["workload"]["description"], []
    url = sweep.start_server(ctx, args)
    workload = Workload(
        num_requests=args.requests,
        input_len=args.input_len,
        output_len=args.output_len,
        concurrency=args.concurrency,
    )
    arm = Arm(f"sustained c={args.concurrency}", url, ctx.options.served_model_name, workload)
    ctx.run_arms([arm])
    return arm.as_dict()["summary"], workload.describe(), [arm]


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    try:
        table = load_price_table(args.prices)
        machine = table.machine(args.machine)
    except PriceTableError as exc:
        raise ScenarioError(str(exc)) from exc
    utilizations = tuple(float(u) for u in args.utilizations.split(","))
    summary, workload, arms = _measured(ctx, args)
    report = cost_report(
        output_tok_s=summary["output_throughput"]["median"],
        total_tok_s=summary["total_token_throughput"]["median"],
        input_tokens=int(summary["total_input_tokens"]["median"]),
        output_tokens=int(summary["total_output_tokens"]["median"]),
        machine=machine,
        table=table,
        per_hour_override=args.dollars_per_hour,
        utilizations=utilizations,
    )
    ctx.notes += report["notes"]
    result = ctx.result(arms=arms, comparisons=[], headline=_headline(report, workload))
    result["cost"] = report
    result["extra_sections"] = [{"title": "Cost per 1M tokens", "lines": _table(report)}]
    return result


def _headline(report: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    price = f"${report['per_hour_used']}/h {report['machine']['id']}"
    rows = []
    for row in report["self_hosted"]:
        at = f"{price}, {row['utilization']:.0%} utilization"
        rows.append(
            headline_row(
                f"self-hosted $ per 1M output tokens ({at})", row["output_per_1m"], "$", workload
            )
        )
        rows.append(
            headline_row(
                f"self-hosted $ per 1M blended 3:1 tokens ({at})",
                row["blended_per_1m"],
                "$",
                workload,
            )
        )
    caveat = workload + "; model quality differs (see notes)"
    # The summary lists every utilization; the headline keeps the lowest (the realistic case).
    lowest = min(row["utilization"] for row in report["self_hosted"])
    for comp in (c for c in report["comparisons"] if c["utilization"] == lowest):
        api = next(p for p in report["api"] if p["id"] == comp["api"])
        at = f"{comp['utilization']:.0%} utilization"
        rows.append(
            headline_row(
                f"{comp['api']} output price (${api['output_per_1m']}/1M, {api['as_of']}) "
                f"/ self-hosted output price ({at})",
                comp["output_times_cheaper"],
                "x",
                caveat,
            )
        )
        rows.append(
            headline_row(
                f"{comp['api']} blended 3:1 price (${api['blended_per_1m']:.3g}/1M) "
                f"/ self-hosted blended price ({at})",
                comp["blended_times_cheaper"],
                "x",
                caveat,
            )
        )
    return rows


def _table(report: dict[str, Any]) -> list[str]:
    machine = report["machine"]
    lines = ["| | $ / 1M output | $ / 1M blended 3:1 | as of | source |", "|---|---|---|---|---|"]
    for row in report["self_hosted"]:
        who = f"self-hosted, ${report['per_hour_used']}/h {machine['id']}, {row['utilization']:.0%}"
        cells = [who, f"{row['output_per_1m']:.4g}", f"{row['blended_per_1m']:.4g}"]
        lines.append("| " + " | ".join([*cells, machine["as_of"], machine["source"]]) + " |")
    for api in report["api"]:
        cells = [
            f"{api['id']} ({api['model']})",
            str(api["output_per_1m"]),
            f"{api['blended_per_1m']:.4g}",
        ]
        lines.append("| " + " | ".join([*cells, api["as_of"], api["source"]]) + " |")
    throughput = report["throughput"]
    lines += [
        "",
        f"Sustained throughput priced: {throughput['output_tok_s']:.1f} output tok/s, "
        f"{throughput['total_tok_s']:.1f} total tok/s "
        f"(input:output {throughput['input_output_ratio']:.2f}:1).",
    ]
    return lines


def plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from lorafleet.benchmarks.plots import plot_arm_latency, plot_cost

    paths = [plot_cost(result, out_dir / "cost.png")]
    if result.get("arms"):
        paths.append(plot_arm_latency(result, out_dir / "latency.png"))
    return paths
